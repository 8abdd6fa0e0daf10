"""Pydantic schema of config.yml: every section, its types, ranges and allowed values."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# the app's link parameters; filters use the column names
RESERVED_LINK_PARAMS = ("url", "item", "k", "crop")


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class PathsConfig(Section):
    images_dataframe_path: Path
    trained_model_path: Path
    vectors_path: Path
    ann_index_path: Path
    image_cache_path: Path = Path("image_cache")
    shortlists_path: Path = Path("shortlists")
    judgments_path: Path = Path("judgments.sqlite")


class DataframeConfig(Section):
    path_field: str = Field(min_length=1)
    id_field: str = Field(default="id", min_length=1)
    name_field: str = Field(default="name", min_length=1)
    label_fields: list[str] = Field(default_factory=list)
    product_url_field: str | None = None


class ModelConfig(Section):
    backbone: str = "resnet18"
    layer_to_get_input: str = "heads"
    input_size: int = Field(default=64, ge=16, le=1024)
    trim_border: bool = False
    batch_size: int = Field(default=128, ge=1, le=4096)
    embedding_dim: int = Field(default=0, ge=0, le=8192)
    neck_hidden: int = Field(default=0, ge=0, le=16384)  # >0: a two-path neck, this MLP width
    head_type: Literal["linear", "cosine"] = "cosine"
    head_scale: float = Field(default=16.0, gt=0, le=100)  # cosine heads: logits = scale x cosine
    pretrained_weights: str | None = None
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    num_workers: int = Field(default=2, ge=0, le=64)
    num_threads: int = Field(default=0, ge=0, le=256)

    @model_validator(mode="after")
    def _neck_needs_embedding(self) -> ModelConfig:
        if self.neck_hidden and not self.embedding_dim:
            raise ValueError("neck_hidden needs embedding_dim > 0 (the MLP's output width)")
        return self


AUGMENTATIONS = ("flip", "warp", "background", "lighting", "blur")  # vectorizer/augment.py


class TaskConfig(Section):
    column: str = Field(min_length=1)
    min_count: int = Field(default=10, ge=1)
    weight: float = Field(default=1.0, gt=0)
    neck_weight: float | None = Field(default=None, gt=0)  # in the neck's fit; None: `weight`
    rare: Literal["merge", "drop"] = "merge"


class TrainingConfig(Section):
    tasks: list[TaskConfig] = Field(min_length=1)
    epochs: int = Field(default=16, ge=1, le=1000)
    max_minutes: float | None = Field(default=None, gt=0, le=100000)
    lr: float = Field(default=2e-3, gt=0, le=10)
    weight_decay: float = Field(default=0.05, ge=0, le=10)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    seed: int = 0
    augment: list[Literal[AUGMENTATIONS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(AUGMENTATIONS))
    warp_share: float = Field(default=1.0, gt=0, le=1)  # share of the images the warp moves
    freeze_stages: int = Field(default=0, ge=0, le=32)
    backbone_lr_factor: float = Field(default=1.0, gt=0, le=1)
    neck_epochs: int = Field(default=0, ge=0, le=1000)  # fit its MLP half on frozen features
    variant_strip_columns: list[str] = Field(default_factory=list)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_switch(cls, value: object) -> object:
        """`true` is every augmentation, `false` none; a list names the ones to use."""
        if isinstance(value, bool):
            return list(AUGMENTATIONS) if value else []
        return value

    @model_validator(mode="after")
    def _unique_task_columns(self) -> TrainingConfig:
        columns = [task.column for task in self.tasks]
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise ValueError(f"task columns must be unique, repeated: {', '.join(duplicates)}")
        return self


class InitTimeConfig(Section):
    method: Literal["hnsw"] = "hnsw"
    space: Literal["cosinesimil", "l2"] = "cosinesimil"


class IndexTimeConfig(Section):
    M: int = Field(default=16, ge=2, le=256)
    efConstruction: int = Field(default=200, ge=1, le=10000)
    indexThreadQty: int = Field(default=2, ge=1, le=256)
    post: int = Field(default=0, ge=0, le=2)


class QueryTimeConfig(Section):
    efSearch: int = Field(default=100, ge=1, le=100000)


class AnnIndexConfig(Section):
    init_time: InitTimeConfig = Field(default_factory=InitTimeConfig)
    index_time: IndexTimeConfig = Field(default_factory=IndexTimeConfig)
    query_time: QueryTimeConfig = Field(default_factory=QueryTimeConfig)
    k: int = Field(default=10, ge=1, le=1000)


MILVUS_INDEX_TYPES = ("HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "DISKANN", "FLAT",
                      "AUTOINDEX")


class MilvusConfig(Section):
    """The milvus backend: where the collections live, how they are indexed and searched."""

    uri: str | None = None
    token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    db_name: str = ""
    collection_prefix: str = Field(default="vsearch", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,150}$")
    index_type: Literal[MILVUS_INDEX_TYPES] = "HNSW"  # type: ignore[valid-type]
    index_params: dict[str, int | float | str] = Field(
        default_factory=lambda: {"M": 16, "efConstruction": 100})
    ef: int = Field(default=64, ge=1, le=32768)
    nprobe: int = Field(default=16, ge=1, le=65536)
    consistency_level: Literal["Strong", "Bounded", "Session", "Eventually"] = "Bounded"
    insert_batch: int = Field(default=2000, ge=1, le=100000)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    build_timeout_s: float = Field(default=7200.0, gt=0, le=86400)  # flush, index, load

    @field_validator("uri")
    @classmethod
    def _lite_file(cls, uri: str | None) -> str | None:
        if uri and not uri.startswith(("http://", "https://")) and not uri.endswith(".db"):
            raise ValueError(f"{uri!r} is neither a Milvus Lite file (a path ending in .db) "
                             "nor a server (http(s)://host:port)")
        return uri

    @property
    def is_lite(self) -> bool:
        return not str(self.uri or "").startswith(("http://", "https://"))


class DownloadConfig(Section):
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    read_timeout_s: float = Field(default=10.0, gt=0, le=300)
    total_deadline_s: float = Field(default=20.0, gt=0, le=600)
    max_bytes: int = Field(default=20_000_000, ge=1024)
    max_redirects: int = Field(default=5, ge=0, le=20)
    max_pixels: int = Field(default=40_000_000, ge=1024)
    retries: int = Field(default=2, ge=0, le=10)
    concurrency: int = Field(default=8, ge=1, le=128)
    allow_private_networks: list[str] = Field(default_factory=list)
    user_agent: str = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0 Safari/537.36 visual-search/1.0"
    )


class BandsConfig(Section):
    same_product: float = Field(default=0.002, ge=0)
    near_duplicate: float = Field(default=0.02, ge=0)
    similar: float = Field(default=0.25, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> BandsConfig:
        if self.similar < self.near_duplicate:
            raise ValueError("similar must be >= near_duplicate")
        return self


class UiConfig(Section):
    title: str = "Visual similarity search"
    filter_fields: list[str] = Field(default_factory=list)
    bands: BandsConfig = Field(default_factory=BandsConfig)
    gallery_size: int = Field(default=12, ge=0, le=200)
    gallery_seed: int = 0
    gallery_classes: list[str] = Field(default_factory=list)
    max_k: int = Field(default=50, ge=1, le=500)
    column_names: dict[str, str] = Field(default_factory=dict)
    map_top_classes: int = Field(default=12, ge=1, le=60)
    list_max_rows: int = Field(default=500, ge=1, le=100_000)


class ColourConfig(Section):
    """How much colour matters: re-ranking a wider candidate set with a colour term."""

    column: str | None = None        # the colour label column; null = no colour control
    # head: the colour head's distributions; catalog: each product's own label (the query's
    # from the head); histogram: RGB of the product's pixels
    source: Literal["head", "catalog", "histogram"] = "head"
    candidates: int = Field(default=60, ge=1, le=5000)
    similar_weight: float = Field(default=0.1, ge=0, le=10)
    same_weight: float = Field(default=0.5, ge=0, le=10)
    default: Literal["any", "similar", "same"] = "similar"


class LabelMatchConfig(Section):
    """The right kind of product first: candidates re-ranked by how likely the model finds the
    query to be of each one's catalog label, per column (README "Known labels steer the
    ranking")."""

    weights: dict[str, float] = Field(default_factory=dict)  # column (a training task): weight
    candidates: int = Field(default=60, ge=1, le=5000)

    @field_validator("weights")
    @classmethod
    def _weights_in_range(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = {column: weight for column, weight in weights.items() if not 0 <= weight <= 10}
        if bad:
            raise ValueError(f"weights must be between 0 and 10, got {bad}")
        return weights


class JudgmentsConfig(Section):
    busy_timeout_s: float = Field(default=2.0, gt=0, le=60)


class CalibrationConfig(Section):
    """The distance bands calibrated on the held-out queries (see index_store/bands.py)."""

    column: str | None = None        # the product type column; null = the first training task
    confident_share: float = Field(default=0.9, gt=0, le=1)
    no_match_share: float = Field(default=0.5, gt=0, le=1)
    min_queries: int = Field(default=20, ge=1)


class EvaluationConfig(Section):
    k: int = Field(default=5, ge=1, le=100)
    max_queries: int = Field(default=2000, ge=1)
    seed: int = 0
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)


class AppConfig(Section):
    """The whole config.yml. `config_dir` is where relative paths were resolved from."""

    paths: PathsConfig
    dataframe: DataframeConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig
    backend: Literal["nmslib", "exact", "milvus"] = "nmslib"
    ann_index: AnnIndexConfig = Field(default_factory=AnnIndexConfig)
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    colour: ColourConfig = Field(default_factory=ColourConfig)
    label_match: LabelMatchConfig = Field(default_factory=LabelMatchConfig)
    judgments: JudgmentsConfig = Field(default_factory=JudgmentsConfig)
    config_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _neck_fitted(self) -> AppConfig:
        """A two-path neck's MLP half is fitted after the epochs: both keys or neither."""
        if self.model.neck_hidden and not self.training.neck_epochs:
            raise ValueError("model.neck_hidden needs training.neck_epochs > 0 (the epochs that "
                             "fit its MLP half on the backbone's features)")
        if self.training.neck_epochs and not self.model.neck_hidden:
            raise ValueError("training.neck_epochs needs model.neck_hidden > 0 (the width of "
                             "the MLP half it fits)")
        return self

    @model_validator(mode="after")
    def _columns_consistent(self) -> AppConfig:
        labels = set(self.dataframe.label_fields)
        missing = [t.column for t in self.training.tasks if t.column not in labels]
        if missing:
            raise ValueError(
                f"training.tasks: columns {missing} must also be listed in dataframe.label_fields"
            )
        unknown_names = [c for c in self.ui.column_names if c not in labels]
        if unknown_names:
            raise ValueError(
                f"ui.column_names: {unknown_names} must be listed in dataframe.label_fields"
            )
        bad_filters = [f for f in self.ui.filter_fields if f not in labels]
        if bad_filters:
            raise ValueError(
                f"ui.filter_fields: {bad_filters} must be listed in dataframe.label_fields"
            )
        reserved = [f for f in self.ui.filter_fields if f in RESERVED_LINK_PARAMS]
        if reserved:
            raise ValueError(f"ui.filter_fields: {reserved} cannot be filters (the app's links "
                             f"use {', '.join(RESERVED_LINK_PARAMS)} for other things)")
        return self._colour_and_calibration_columns(labels)

    def _colour_and_calibration_columns(self, labels: set[str]) -> AppConfig:
        colour = self.colour.column
        if colour is not None and colour not in labels:
            raise ValueError(f"colour.column: {colour!r} must be listed in dataframe.label_fields")
        if colour is not None and self.colour.source != "histogram" \
                and colour not in self.task_columns:
            raise ValueError(f"colour.column: {colour!r} has no head in training.tasks "
                             "(add it there, or use colour.source: histogram)")
        headless = [c for c in self.label_match.weights if c not in self.task_columns]
        if headless:
            raise ValueError(f"label_match.weights: {headless} have no head in training.tasks "
                             "(add them there, or leave them out)")
        column = self.evaluation.calibration.column
        if column is not None and column not in labels:
            raise ValueError(f"evaluation.calibration.column: {column!r} must be listed in "
                             "dataframe.label_fields")
        return self

    @property
    def calibration_column(self) -> str | None:
        """The product type column the bands are calibrated on."""
        column = self.evaluation.calibration.column
        return column or (self.task_columns[0] if self.task_columns else None)

    @property
    def task_columns(self) -> list[str]:
        return [task.column for task in self.training.tasks]
