"""What a job's options mean to the imaging core: the memory budget one image is checked against, and
the finish step's parameters (parsed values, no option names)."""

from __future__ import annotations

from cutout_fleet.config.settings import ImageLimits
from cutout_fleet.layout import parse_canvas, parse_margin
from cutout_fleet.options import ImageOptions
from cutout_fleet.worker.imaging.budget import MIB, MemoryBudget
from cutout_fleet.worker.imaging.finish import FinishSpec


def image_budget(options: ImageOptions, limits: ImageLimits) -> MemoryBudget:
    """The memory budget one image of these options is checked against before decoding."""
    framed_px: int | None = 0
    if options.frames:
        canvas = None if options.canvas == "none" else parse_canvas(options.canvas)
        if canvas is None:
            framed_px = None  # a crop: at most the source's size
        elif canvas.size is None:
            framed_px = options.max_square_px**2
        else:
            framed_px = canvas.size[0] * canvas.size[1]
    return MemoryBudget(limits.max_image_memory_mib * MIB, options.format, framed_px)


def finish_spec(options: ImageOptions) -> FinishSpec:
    """The imaging core's view of the options: parsed values, no option names."""
    return FinishSpec(
        background=options.background_rgb,
        cutout=options.writes_cutout,
        mask=options.output != "cutout",
        crop_subject=options.crop == "subject",
        margin=parse_margin(options.margin),
        canvas=None if options.canvas == "none" else parse_canvas(options.canvas),
        fill=options.fill,
        align=options.align,
        shadow=options.shadow == "drop",
        keep_no_subject=options.on_no_subject == "keep",
        visible_threshold=options.visible_threshold,
        min_speck_share=options.min_speck_share,
        min_subject_share=options.min_subject_share,
        max_upscale=options.max_upscale,
        max_square_px=options.max_square_px,
    )
