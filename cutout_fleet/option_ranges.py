"""The ranges of the numeric image options: shared by the options model and the CLI's flags, which must
not import pydantic just to show `--help`."""

SENSITIVITY_RANGE = (0.0, 1.0)
MASK_BLUR_RANGE_PX = (0, 64)
MASK_OFFSET_RANGE_PX = (-64, 64)
