"""Catalog table loading, the Kaggle importer (tiny and real), and the synthetic demo generator."""

import os
from pathlib import Path

import pandas as pd
import pytest

from config import ConfigError, load_config
from ingest.catalog import CatalogError, import_kaggle, load_catalog, read_kaggle_styles
from ingest.synthetic import generate_catalog
from tests.test_config import write_config

REAL_DATA = Path(os.environ.get("FASHION_DATA", Path(__file__).resolve().parents[2] /
                                "shared/datasets/fashion-product-images-small"))


def config_for_table(tmp_path: Path, table: pd.DataFrame, name: str = "catalog.csv"):
    table_path = tmp_path / name
    if name.endswith(".parquet"):
        table.to_parquet(table_path)
    else:
        table.to_csv(table_path, index=False)
    return load_config(write_config(tmp_path, {"paths.images_dataframe_path": str(table_path)}))


def small_table(count: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"0{i}" for i in range(count)], "name": ["a"] * count,
                         "garment": ["Dress"] * count, "colour": ["Red"] * count,
                         "pattern": ["Solid"] * count, "gender": ["Women"] * count,
                         "image_path": [f"img/{i}.jpg" for i in range(count)]})


def test_loads_csv_and_parquet_keeping_ids_as_text(tmp_path):
    for name in ("catalog.csv", "catalog.parquet"):
        items = load_catalog(config_for_table(tmp_path, small_table(), name))
        assert items["id"].tolist() == ["00", "01", "02"]
        assert items["image_ref"][0] == str(tmp_path / "img" / "0.jpg")


def test_missing_column_lists_existing_columns(tmp_path):
    config = config_for_table(tmp_path, small_table().drop(columns=["pattern"]))
    message = str(pytest.raises(CatalogError, load_catalog, config).value)
    assert "dataframe.label_fields: column(s) ['pattern'] not in the catalog table" in message
    assert "its columns are: id, name, garment, colour, gender, image_path" in message


def test_duplicate_ids_and_empty_catalog_are_errors(tmp_path):
    table = small_table()
    table.loc[2, "id"] = "01"
    assert "1 duplicate id(s), e.g. 01" in str(
        pytest.raises(CatalogError, load_catalog, config_for_table(tmp_path, table)).value)
    assert "the catalog is empty" in str(pytest.raises(
        CatalogError, load_catalog, config_for_table(tmp_path, small_table(0))).value)


def test_missing_table_names_the_key(tmp_path):
    config = load_config(write_config(tmp_path, {"paths.images_dataframe_path": "nope.csv"}))
    assert "paths.images_dataframe_path: file not found" in str(
        pytest.raises(ConfigError, load_catalog, config).value)


def write_kaggle_layout(folder: Path) -> None:
    (folder / "images").mkdir(parents=True)
    lines = [
        "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
        "productDisplayName",
        "1,Men,Apparel,Topwear,Tshirts,White,Summer,2011,Casual,Myntra Men's Yes, its all about me",
        "2,Women,Footwear,Shoes,Heels,Red,,2012,Casual,Plain heels",
        "3,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,No image here",
        "broken line",
    ]
    (folder / "styles.csv").write_text("\n".join(lines) + "\n")
    for item_id in ("1", "2"):
        (folder / "images" / f"{item_id}.jpg").write_bytes(b"x")


def test_kaggle_importer_on_a_tiny_layout(tmp_path):
    write_kaggle_layout(tmp_path / "src")
    report = import_kaggle(tmp_path / "src", tmp_path / "out" / "catalog.csv")
    assert (report.rows_read, report.kept) == (4, 2)
    assert report.dropped == {"malformed row": 1, "no image file": 1}
    table = pd.read_csv(tmp_path / "out" / "catalog.csv", dtype=str)
    assert table.loc[0, "productDisplayName"] == "Myntra Men's Yes, its all about me"
    assert pd.isna(table.loc[1, "season"])


@pytest.fixture(scope="module")
def real_data() -> Path:
    if not (REAL_DATA / "styles.csv").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real catalog missing in CI: {REAL_DATA}")
        pytest.skip(f"real catalog not found at {REAL_DATA}")
    return REAL_DATA


@pytest.mark.real
def test_kaggle_importer_on_the_real_catalog(real_data, tmp_path):
    styles, _ = read_kaggle_styles(real_data / "styles.csv")
    assert len(styles) == 44446
    with_commas = styles[styles["productDisplayName"].str.contains(",")]
    assert len(with_commas) == 22
    assert "Boss Men Perfume, After Shave Balm and Shower Gel Set" in set(
        with_commas["productDisplayName"])
    assert (styles["id"].str.isdigit()).all()
    report = import_kaggle(real_data, tmp_path / "catalog.csv")
    assert report.kept == 44072
    assert report.dropped == {"no image file": 374}
    config = load_config(Path(__file__).resolve().parents[1] / "config" / "fashion.yml")
    config.paths.images_dataframe_path = tmp_path / "catalog.csv"
    items = load_catalog(config)
    assert len(items) == 44072 and items["id"].is_unique
    assert Path(items["image_ref"][0]).is_file()


def test_synthetic_catalog_is_deterministic(tmp_path):
    first = generate_catalog(tmp_path / "a" / "catalog.csv", 40, seed=3)
    second = generate_catalog(tmp_path / "b" / "catalog.csv", 40, seed=3)
    pd.testing.assert_frame_equal(first, second)
    image_a = (tmp_path / "a" / first["image_path"][5]).read_bytes()
    assert image_a == (tmp_path / "b" / second["image_path"][5]).read_bytes()
    assert first["garment"].nunique() > 3 and first["colour"].nunique() > 3
