"""The build/serve contract: typed checkpoint meta, index fingerprint and index manifest.

Training writes `CheckpointMeta` into the checkpoint; `build_index.py` writes an `IndexManifest`
(with the `IndexFingerprint`) beside the index; serving, the report page and the scripts read them
back through these records. Every field a reader uses is typed here; other keys are kept as they
are (older or newer files still load), so the on-disk formats are unchanged plain JSON / dicts.
Imports no torch and nothing from `vectorizer` or `index_store`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from config import AppConfig
from util.files import file_sha256


class Record(BaseModel):
    """A typed view of a stored dict: unknown keys are kept, missing optional ones default."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def as_dict(self) -> dict[str, Any]:
        """The plain dict to store: the keys that were given (none invented by defaults)."""
        return self.model_dump(exclude_unset=True)


# ---------------------------------------------------------------- the checkpoint


REQUIRED_META = ("format", "backbone", "preprocess", "embedding_dim", "head_type",
                 "layer_to_get_input", "tasks", "split", "catalog_checksum")


class CheckpointMeta(Record):
    """Everything saved with the weights that rebuilds the model and its preprocessing."""

    format: int = 1
    backbone: str
    preprocess: dict[str, Any]
    embedding_dim: int
    neck_hidden: int = 0  # a two-path neck's MLP width; 0 (and older checkpoints): one linear layer
    head_type: str
    head_scale: float = 16.0  # checkpoints before the key was added were trained with 16
    layer_to_get_input: str
    tasks: dict[str, list[Any]]  # class names per task, in the heads' order
    split: dict[str, Any] = Field(default_factory=dict)
    catalog_checksum: str = ""
    pretrained_weights: str | None = None
    vector_mean: list[float] | None = None
    vector_scale: list[float] | None = None  # per dimension, after centring (vectorizer.neck)
    vector_dim: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)

    @property
    def test_ids(self) -> set[str]:
        """Ids of the held-out test products (empty when the model has no split)."""
        return {str(item) for item in self.split.get("test", [])}

    @property
    def split_strategy(self) -> str:
        return str(self.split.get("strategy", "none"))

    @property
    def trim_border(self) -> bool:
        return bool(self.preprocess.get("trim_border", False))


def missing_meta(meta: object) -> list[str]:
    """The required checkpoint keys `meta` lacks (all of them when it is not a dict)."""
    present = meta if isinstance(meta, dict) else {}
    return [key for key in REQUIRED_META if key not in present]


# ---------------------------------------------------------------- the index


class Checkpoint(Protocol):
    """What the fingerprint needs of a loaded model (the `Encoder` has it)."""

    checksum: str
    checkpoint: CheckpointMeta
    preprocess_signature: dict[str, Any]  # the stored preprocessing + the trimming code's revision


class IndexFingerprint(Record):
    """Everything that changes the built index; query-time settings and UI never appear here."""

    model_checksum: str
    catalog_checksum: str
    preprocess: dict[str, Any]
    layer_to_get_input: str
    backend: str
    space: str
    method: str
    index_time: dict[str, Any]

    @classmethod
    def of(cls, config: AppConfig, model: Checkpoint) -> IndexFingerprint:
        return cls(
            model_checksum=model.checksum,
            catalog_checksum=file_sha256(Path(config.paths.images_dataframe_path)),
            preprocess=model.preprocess_signature,
            layer_to_get_input=model.checkpoint.layer_to_get_input,
            backend=config.backend,
            space=config.ann_index.init_time.space,
            method=config.ann_index.init_time.method,
            index_time=index_time_params(config),
        )


def index_time_params(config: AppConfig) -> dict[str, Any]:
    """The backend's settings that change the built index (build threads do not)."""
    if config.backend == "milvus":
        return {"index_type": config.milvus.index_type, **config.milvus.index_params}
    return config.ann_index.index_time.model_dump(exclude={"indexThreadQty"})


def index_fingerprint(config: AppConfig, model: Checkpoint) -> dict[str, Any]:
    """The fingerprint as the store compares it (a plain dict)."""
    return IndexFingerprint.of(config, model).as_dict()


class ModelSummary(Record):
    backbone: str = "?"
    checksum: str = "?"
    tasks: dict[str, int] = Field(default_factory=dict)
    val: dict[str, Any] = Field(default_factory=dict)
    precision: str | None = None


class Latency(Record):
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0


class ClassScores(Record):
    map_at_k: float = 0.0
    precision_at_k: float = 0.0
    queries: int = 0


class TaskScores(ClassScores):
    per_class: dict[str, ClassScores] = Field(default_factory=dict)


class CalibratedBands(Record):
    """Distance bands from the build's held-out queries (see `index_store.bands`)."""

    column: str = ""
    queries: int = 0
    top1_share: float | None = None       # best match of the query's type, all queries
    confident: float = 0.0                # up to here: the type right in >= confident_share
    confident_share: float = 0.9
    confident_queries: int = 0
    confident_share_seen: float | None = None
    no_match: float = 0.0                 # beyond here: "no confident match in this catalog"
    no_match_share: float = 0.5
    no_match_basis: str = ""              # "share", or "percentile 99" when never below it
    no_match_queries: int | None = None
    no_match_share_seen: float | None = None


class JudgmentScores(Record):
    """The stored judgments re-scored against this index (see `judgments.scores.rescore`)."""

    k: int = 0
    approved: int = 0        # (query, result) pairs whose latest verdict is a thumbs up
    asked: int = 0           # of those, the ones whose query could be asked again
    retained: int = 0        # ... whose approved result is still in this index's top k
    share: float | None = None
    unanswerable: int = 0


class ShownSearchScores(Record):
    """The search as shown, measured at build (see `search_quality.shown_search_metrics`)."""

    k: int | None = None
    queries: int = 0
    query_source: str = ""
    settings: dict[str, Any] = Field(default_factory=dict)  # colour mode, label_match weights
    tasks: dict[str, TaskScores] = Field(default_factory=dict)


class IndexMetrics(Record):
    """The build's evaluation (see `index_store.evaluate.evaluate_index`)."""

    k: int | None = None
    queries: int | None = None
    query_source: str = ""
    split: str = "none"
    tasks: dict[str, TaskScores] = Field(default_factory=dict)
    recall_k: int | None = None
    recall_at_k: float | None = None
    latency: Latency = Field(default_factory=Latency)
    bands: CalibratedBands | None = None
    shown: ShownSearchScores | None = None  # None: built before it was measured


class BuildCounts(Record):
    items_in_catalog: int | None = None
    items_indexed: int | None = None
    items_skipped: int = 0
    skipped_reasons: dict[str, int] = Field(default_factory=dict)


class IndexManifest(Record):
    """manifest.json of an index version: the store's part and the build's report."""

    format: int | None = None
    version: str = "?"
    built_at: str = "?"
    created_at: str | None = None
    config_path: str = "?"
    backend: str | None = None
    space: str | None = None
    n_items: int = 0
    dim: int | None = None
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    model: ModelSummary = Field(default_factory=ModelSummary)
    counts: BuildCounts = Field(default_factory=BuildCounts)
    metrics: IndexMetrics = Field(default_factory=IndexMetrics)
    step_seconds: dict[str, float] = Field(default_factory=dict)
    judgments: JudgmentScores | None = None
    versions: dict[str, str | None] = Field(default_factory=dict)
    colours: dict[str, Any] | None = None  # stored colour distributions: column, file, classes

    @property
    def items_indexed(self) -> int:
        return self.counts.items_indexed if self.counts.items_indexed is not None else self.n_items

    @property
    def items_in_catalog(self) -> int:
        found = self.counts.items_in_catalog
        return found if found is not None else self.items_indexed
