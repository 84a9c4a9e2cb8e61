"""The validation report: a JSON document for machines and a self-contained HTML page for people.

Both are stored beside the version (``<dataset>/v<n>/validation/report.{json,html}``). The HTML
carries its CSS inline and links nothing, so it opens the same from MinIO's console, an e-mail or a
laptop without network. Neither holds a wall-clock time: a report is a function of the version,
its labels and the thresholds, so validating a version again rewrites the same bytes.
"""

from __future__ import annotations

from datetime import datetime

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import Field
from screwops_contracts import AssertionResult, SplitCounts
from screwops_contracts.datasets import Document, SplitName

from screwops_validation.config import Thresholds

__all__ = [
    "ClassStats",
    "DriftFigure",
    "DuplicateGroup",
    "ImageProblem",
    "NearDuplicatePair",
    "NearDuplicates",
    "ReportKeys",
    "SplitSummary",
    "Summary",
    "ValidationReport",
    "render_html",
]


class ReportKeys(Document):
    """Where a version's validation outputs are, in the datasets bucket."""

    split: str = Field(examples=["screws/v3/split.json"])
    report: str = Field(examples=["screws/v3/validation/report.json"])
    report_html: str = Field(examples=["screws/v3/validation/report.html"])


class Summary(Document):
    """One statistic over one class's images."""

    mean: float
    std: float
    min: float
    median: float
    max: float


class ClassStats(Document):
    """A class's size, its defect types and how its images look (0-255 gray levels)."""

    label: str
    count: int
    defect_types: dict[str, int] = Field(description="Images per defect type ('-' for none).")
    brightness: Summary = Field(description="Mean gray level per image.")
    contrast: Summary = Field(description="Standard deviation of gray levels per image.")
    sharpness: Summary = Field(description="Variance of the Laplacian per image.")


class DuplicateGroup(Document):
    """Files that hold the same picture (identical decoded pixels)."""

    pixel_digest: str
    filenames: list[str]
    sha256s: list[str]


class NearDuplicatePair(Document):
    """Two different pictures whose perceptual hashes are within the threshold."""

    a: str
    b: str
    a_sha256: str
    b_sha256: str
    distance: int = Field(description="Hamming distance of the 64-bit pHashes.")
    a_split: SplitName
    b_split: SplitName

    @property
    def across(self) -> bool:
        """Whether the pair straddles two splits (leakage)."""
        return self.a_split != self.b_split


class NearDuplicates(Document):
    """Every near-duplicate pair counted; the first ones listed."""

    max_distance: int
    total: int
    within_split: int
    across_splits: int
    largest_group: int = Field(description="Images in the largest group kept in one split.")
    pairs: list[NearDuplicatePair] = Field(description="The first pairs, up to the setting.")


class ImageProblem(Document):
    """An image that could not be fetched or decoded, and why."""

    sha256: str
    filename: str
    reason: str


class SplitSummary(Document):
    """The split's rule and its sizes, overall and per class."""

    seed: int
    fractions: dict[str, float]
    counts: SplitCounts
    per_class: dict[str, dict[str, int]] = Field(description="label -> split -> images.")
    inherited_from: int | None = Field(
        description="The earlier validated version whose split this one keeps; null if none."
    )
    kept: int = Field(description="Images whose split that version had decided.")


class DriftFigure(Document):
    """How far apart two splits' distributions of one statistic are."""

    metric: str
    a: SplitName
    b: SplitName
    n_a: int
    n_b: int
    ks: float = Field(description="Two-sample Kolmogorov-Smirnov statistic.")
    bound: float = Field(description="The configured largest KS.")
    threshold: float = Field(description="max(bound, the KS critical value for n_a, n_b).")
    passed: bool


class ValidationReport(Document):
    """Everything validation found about one version, and its verdict."""

    dataset_id: str
    version: int
    cause_event_id: str = Field(description="The dataset.labeled event judged.")
    labeled_at: datetime = Field(description="When the version's labels were closed.")
    manifest_image_count: int
    labeled_count: int
    excluded_count: int
    passed: bool
    assertions: list[AssertionResult]
    class_stats: list[ClassStats]
    class_ratio: float | None = Field(
        description="Majority over minority class size, reported and never capped (null when "
        "a class is empty)."
    )
    exact_duplicates: list[DuplicateGroup]
    near_duplicates: NearDuplicates
    undecodable: list[ImageProblem]
    split: SplitSummary
    drift: list[DriftFigure]
    thresholds: Thresholds
    keys: ReportKeys
    split_key: str | None = Field(description="The stored split; null when rejected.")
    dataset_digest: str | None = Field(description="What training is fed; null when rejected.")


def _number(value: float | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


_ENVIRONMENT = Environment(
    loader=PackageLoader("screwops_validation", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENVIRONMENT.filters["number"] = _number


def render_html(report: ValidationReport) -> str:
    """The report as one HTML page with inline CSS and no external assets or scripts."""
    return _ENVIRONMENT.get_template("report.html.j2").render(report=report)
