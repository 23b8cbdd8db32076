"""The ``synthetic`` and ``ingest`` job kinds."""

from __future__ import annotations

from pf_ray.data.schema import SAMPLE_OUTPUT
from pf_ray.ingest.plan import plan_ingest, plan_synthetic
from pf_ray.ingest.spec import IngestSpec, SyntheticSpec
from pf_ray.jobs.registry import JobKind

SYNTHETIC = JobKind("synthetic", SyntheticSpec, plan=plan_synthetic, output=SAMPLE_OUTPUT,
                    description="the offline default dataset: shapes with known ground truth")
INGEST = JobKind("ingest", IngestSpec, plan=plan_ingest, output=SAMPLE_OUTPUT,
                 description="a public dataset file in its own format -> sample shards")
