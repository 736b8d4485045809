"""The last stage of a registration: the outputs as a group. Every output path is checked
before any work (:func:`check_outputs`), and an output written by a run that fails later is
removed again, so that a run leaves a complete group of outputs or none."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sarreg.config import RegisterConfig, transform_model


def check_outputs(out_path, config: RegisterConfig, inputs=()) -> str | None:
    """Check every output path before any work; returns the report path (or None).

    ``inputs``: ``(reference, moving)`` paths; no output may be one of them or another output
    (:func:`sarreg.outputs.register_guard`)."""
    from sarreg.atomic import check_output_path
    from sarreg.gis import extra_outputs
    from sarreg.outputs import register_guard

    report_path = None
    if out_path is not None:
        report_path = config.output.report or str(Path(str(out_path)).with_suffix(".json"))
    elif config.output.report:
        report_path = config.output.report
    register_guard(out_path, report_path, config, inputs)
    if out_path is not None:
        check_output_path(str(out_path), overwrite=config.output.overwrite)
    if report_path is not None:
        check_output_path(report_path, overwrite=config.output.overwrite)
    for extra in (config.output.plot, config.output.gcps, *extra_outputs(config.output)):
        if extra:
            check_output_path(extra, overwrite=config.output.overwrite)
    return report_path


def remove_quietly(paths: list[str]) -> None:
    """Delete the files of a registration that failed part-way (outputs go as a group)."""
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass


def gcp_indices(fit, xy_mov: np.ndarray, config: RegisterConfig) -> np.ndarray | None:
    """Indices of the tie points written as GCPs into a ``--mode georef`` output (inliers; for
    the non-linear models thinned to ``config.output.max_gcps`` spread over the moving image),
    or None when the output gets a geotransform instead (translation/similarity/affine)."""
    from sarreg.mapping import thin_points

    if config.output.mode != "georef" or transform_model(config.estimate.transform).geotransform:
        return None
    inl = np.flatnonzero(np.asarray(fit.inliers, dtype=bool))
    if fit.mapping is None:  # homography: every inlier, as always
        return inl
    res = np.asarray(fit.residuals)[inl]
    return inl[thin_points(xy_mov[inl], res, config.output.max_gcps)]


def write_output(out_path, mov_path, ref_info, fit, xy_ref, xy_mov, gcp_idx, config) -> str:
    """Write the output image: the moving image resampled onto the reference grid (mode
    resample) or its pixels with a corrected geotransform / GCPs (mode georef)."""
    from sarreg import geometry, warp

    if config.output.mode == "resample":
        if ref_info.transform is not None:
            transform, crs = ref_info.transform, ref_info.crs
        else:
            from affine import Affine

            transform, crs = Affine.identity(), None
        grid = warp.GridSpec(
            crs=crs, transform=transform, width=ref_info.shape[1], height=ref_info.shape[0]
        )
        warp.resample_to_grid(
            mov_path,
            config.input.band_mov,
            fit.mapping if fit.mapping is not None else fit.matrix,
            grid,
            out_path,
            resampling=config.output.resampling,
            overwrite=config.output.overwrite,
            progress=config.progress,
            cog=config.output.cog,
        )
        return out_path
    # georef mode
    if gcp_idx is not None:
        XY = geometry.pixel_to_map(ref_info.transform, xy_ref[gcp_idx])
        gcps = [
            (float(a), float(b), float(c), float(d))
            for (a, b), (c, d) in zip(xy_mov[gcp_idx], XY, strict=True)
        ]
        warp.write_georeferenced(
            mov_path,
            config.input.band_mov,
            out_path,
            crs=ref_info.crs,
            gcps=gcps,
            overwrite=config.output.overwrite,
            cog=config.output.cog,
        )
    else:
        new_t = geometry.corrected_geotransform(ref_info.transform, fit.matrix)
        warp.write_georeferenced(
            mov_path,
            config.input.band_mov,
            out_path,
            transform=new_t,
            crs=ref_info.crs,
            overwrite=config.output.overwrite,
            cog=config.output.cog,
        )
    return out_path
