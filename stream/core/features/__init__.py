"""Features as real streams carry them: a schema of named fields, their encoding, and class labels.

- :mod:`.schema`: :class:`FeatureSchema` (declared or inferred; plain data in checkpoints and versions);
- :mod:`.encode`: :class:`FeatureEncoder`, records -> the encoded float32 matrix, the same for
  learning and serving;
- :mod:`.infer`: :func:`infer_schema` from the first records;
- :mod:`.labels`: :class:`LabelMap`, labels <-> class indices, grown online.
"""

from stream.core.features.encode import Encoded, FeatureEncoder, FieldError
from stream.core.features.infer import infer_schema
from stream.core.features.labels import LabelError, LabelMap
from stream.core.features.schema import FeatureSchema, FieldSpec, load_schema

__all__ = [
    "Encoded", "FeatureEncoder", "FeatureSchema", "FieldError", "FieldSpec", "LabelError", "LabelMap",
    "infer_schema", "load_schema",
]  # fmt: skip
