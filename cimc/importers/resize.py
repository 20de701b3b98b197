"""Importers of Resize and Upsample."""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers._core import ImportContext, importer, refuse
from cimc.importers._common import _no_integer_arithmetic, _keep_integers, _constant_input, _choice


_COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                     "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")


_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


_ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


@importer("Resize", "Upsample")
def _resize(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """Nearest, (multi)linear and cubic resizing of the axes after (N, C), one scale per axis.

    Scales are kept as float32 values, as the coordinate transforms of onnxruntime
    use them; with ``sizes`` they are the size ratios (a common one under a
    keep_aspect_ratio_policy). Output sizes come from the inferred output shape.
    Cubic, antialiased and tf_crop_and_resize resizing carry their extra attributes
    (``cubic_coeff_a``, ``exclude_outside``, ``antialias``, per-axis ``roi``,
    ``extrapolation_value``).
    """
    a = ctx.attrs(node)
    x = ctx.activation(node, 0)
    in_shape, out_shape = ctx.shape(x), ctx.shape(node.output[0])
    rank = len(in_shape)
    mode = _choice(node, a, "mode", "nearest", ("nearest", "linear", "cubic"))
    scales: list[np.float32] = [np.float32(1.0)] * rank
    roi: list[tuple[float, float]] = [(0.0, 1.0)] * rank
    extra: dict = {}
    if node.op_type == "Upsample":              # opsets 7 and 9 (later models were converted)
        coordinates, nearest = "asymmetric", "floor"
        given = a.get("scales") or _constant_input(ctx, node, 1, "scales")
        scales = [np.float32(s) for s in np.asarray(given, dtype=np.float32).reshape(-1)]
        if min(scales) < 1:
            raise refuse(node, "scales below 1", "upsampling (scales >= 1)")
    else:
        antialias = int(a.get("antialias", 0))
        exclude_outside = int(a.get("exclude_outside", 0))
        if antialias and mode == "nearest":
            raise refuse(node, "antialias=1 with mode='nearest'", "antialias with linear and cubic modes")
        if exclude_outside and mode != "cubic" and not antialias:
            raise refuse(node, "exclude_outside=1 without cubic mode or antialias",
                         "exclude_outside with cubic, or antialiased linear, resizing")
        coordinates = _choice(node, a, "coordinate_transformation_mode", "half_pixel", _COORDINATE_MODES)
        nearest = _choice(node, a, "nearest_mode", "round_prefer_floor", _NEAREST_MODES)
        policy = _choice(node, a, "keep_aspect_ratio_policy", "stretch", _ASPECT_POLICIES)
        axes = [int(ax) % rank for ax in a.get("axes", range(rank))]
        if mode == "cubic":
            extra["cubic_coeff_a"] = float(np.float32(a.get("cubic_coeff_a", -0.75)))
        if mode == "cubic" or antialias:
            extra.update(exclude_outside=exclude_outside, antialias=antialias)
        if coordinates == "tf_crop_and_resize":
            given_roi = _constant_input(ctx, node, 1, "roi")
            if given_roi is None or given_roi.size != 2 * len(axes):
                raise refuse(node, "tf_crop_and_resize without a roi of two values per axis", "a constant roi")
            given_roi = [float(np.float32(v)) for v in given_roi.reshape(-1)]
            for i, ax in enumerate(axes):
                roi[ax] = (given_roi[i], given_roi[len(axes) + i])
            extra["extrapolation_value"] = float(np.float32(a.get("extrapolation_value", 0.0)))
        given_scales = _constant_input(ctx, node, 2, "scales")
        given_sizes = _constant_input(ctx, node, 3, "sizes")
        if given_scales is not None and given_scales.size:
            for ax, s in zip(axes, given_scales.astype(np.float32).reshape(-1)):
                scales[ax] = np.float32(s)
        elif given_sizes is not None and given_sizes.size:
            ratios = {ax: np.float32(s) / np.float32(in_shape[ax]) for ax, s in zip(axes, given_sizes.reshape(-1))}
            if policy != "stretch":
                common = (min if policy == "not_larger" else max)(ratios.values())
                ratios = dict.fromkeys(ratios, common)
            for ax, s in ratios.items():
                scales[ax] = np.float32(s)
        else:
            raise refuse(node, "Resize without scales or sizes", "constant scales or sizes")
    resized = [ax for ax in range(rank)
               if scales[ax] != 1 or out_shape[ax] != in_shape[ax] or roi[ax] != (0.0, 1.0)]
    if any(ax < 2 for ax in resized):
        raise refuse(node, f"resizing axis {min(resized)} (batch or channels)", "resizing the axes after (N, C)")
    if mode != "nearest":
        _no_integer_arithmetic(ctx, node)
    else:
        _keep_integers(ctx, node)
    if not resized:
        ctx.emit(node, "Identity", [x])
        return
    attrs = {"mode": mode, "coordinate_transformation_mode": coordinates, "axes": resized,
             "scales": [float(scales[ax]) for ax in resized], "sizes": [out_shape[ax] for ax in resized]}
    if mode == "nearest":
        attrs["nearest_mode"] = nearest
    if coordinates == "tf_crop_and_resize":
        extra["roi"] = [list(roi[ax]) for ax in resized]
    attrs.update(extra)
    ctx.emit(node, "Resize", [x], attrs)
