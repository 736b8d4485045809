"""Tie-point export for QGIS, gdalwarp or any GIS: GeoJSON points, a GeoPackage layer or CSV.

One record per tie point of a registration (from the JSON report's ``tie_points``):

=================  ===========================================================================
field              meaning
=================  ===========================================================================
id                 1-based index (the GCP id in a ``--mode georef`` output when ``gcp``)
ref_x, ref_y       reference pixel centre (top-left pixel centre at 0, 0), full resolution
ref_map_x/_y       map coordinates of that point in the reference CRS (empty without one)
mov_x, mov_y       moving pixel centre
mov_col, mov_row   the same in GDAL's corner-based pixel/line (= mov_x/y + 0.5), as in GCPs
residual_px        distance in reference pixels between the tie point and the fitted model
similarity         descriptor cosine similarity of the match
score_ref/_mov     keypoint ranking scores (reliability by default, see ExtractConfig.rank)
inlier             whether the fit counted the point as an inlier
tile               tile of the large-scene path the point came from (-1: in-memory path)
gcp                whether the point was written as a GCP into the output GeoTIFF
verification       the point's verification result, where the report has one (else absent)
=================  ===========================================================================

GeoJSON: a FeatureCollection of Points at ``ref_map`` in the reference CRS, which is named in the
(GeoJSON 2008) ``crs`` member that GDAL/OGR and QGIS read, and in ``properties.crs`` of the
collection. GeoPackage (``.gpkg``, written with fiona/GDAL): one point layer
``sarreg_tie_points`` at ``ref_map`` in the reference CRS with the fields above. Files are
written atomically (:mod:`sarreg.atomic`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from sarreg.atomic import atomic_write, write_text_atomic

FIELDS = (
    "id", "ref_x", "ref_y", "ref_map_x", "ref_map_y", "mov_x", "mov_y", "mov_col", "mov_row",
    "residual_px", "similarity", "score_ref", "score_mov", "inlier", "tile", "gcp",
)  # fmt: skip
#: Tie-point keys of a report carried into the export when present (verification result).
OPTIONAL_FIELDS = ("verification",)
LAYER = "sarreg_tie_points"
_GPKG_TYPES = {
    "id": "int", "tile": "int", "inlier": "bool", "gcp": "bool",
}  # fmt: skip


def tie_point_records(report: dict) -> list[dict]:
    """Flat records (see the module docstring) of a registration report's tie points."""
    out = []
    for i, tp in enumerate(report["tie_points"]):
        ref_map = tp.get("ref_map") or [None, None]
        out.append(
            {
                "id": i + 1,
                "ref_x": tp["ref_px"][0],
                "ref_y": tp["ref_px"][1],
                "ref_map_x": ref_map[0],
                "ref_map_y": ref_map[1],
                "mov_x": tp["mov_px"][0],
                "mov_y": tp["mov_px"][1],
                "mov_col": tp["mov_px"][0] + 0.5,
                "mov_row": tp["mov_px"][1] + 0.5,
                "residual_px": tp["residual_px"],
                "similarity": tp["similarity"],
                "score_ref": tp.get("score_ref"),
                "score_mov": tp.get("score_mov"),
                "inlier": tp["inlier"],
                "tile": tp.get("tile", -1),
                "gcp": tp.get("gcp", False),
            }
        )
        for key in OPTIONAL_FIELDS:
            if key in tp:
                value = tp[key]
                out[-1][key] = json.dumps(value) if isinstance(value, (dict, list)) else value
    return out


def _fields(records: list[dict]) -> list[str]:
    """:data:`FIELDS` plus the optional fields present in any record."""
    extra = [k for k in OPTIONAL_FIELDS if any(k in r for r in records)]
    return list(FIELDS) + extra


def _crs_member(crs: str | None) -> dict | None:
    """GeoJSON 2008 ``crs`` member (``urn:ogc:def:crs:EPSG::<code>`` or the WKT)."""
    if not crs:
        return None
    if crs.upper().startswith("EPSG:"):
        return {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{crs[5:]}"}}
    return {"type": "name", "properties": {"name": crs}}


def to_geojson(report: dict) -> dict:
    """GeoJSON FeatureCollection of the tie points, in the reference CRS."""
    feats = []
    for rec in tie_point_records(report):
        if rec["ref_map_x"] is None:
            continue
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [rec["ref_map_x"], rec["ref_map_y"]]},
                "properties": rec,
            }
        )
    out: dict = {"type": "FeatureCollection", "name": "sarreg_tie_points"}
    member = _crs_member(report.get("crs"))
    if member:
        out["crs"] = member
    out["properties"] = {
        "crs": report.get("crs"),
        "reference": report["reference"]["path"],
        "moving": report["moving"]["path"],
        "transform": report["transform"]["model"],
        "pixel_convention": "pixel centres, top-left pixel centre at (0, 0); mov_col/mov_row "
        "are GDAL pixel/line (corner-based)",
    }
    out["features"] = feats
    return out


def to_csv(report: dict) -> str:
    """CSV text of the tie points (header: :data:`FIELDS`)."""
    buf = io.StringIO()
    records = tie_point_records(report)
    writer = csv.DictWriter(buf, fieldnames=_fields(records), lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: "" if v is None else v for k, v in rec.items()})
    return buf.getvalue()


def _gpkg_type(key: str, records: list[dict]) -> str:
    if key in _GPKG_TYPES:
        return _GPKG_TYPES[key]
    values = [r.get(key) for r in records if r.get(key) is not None]
    if values and all(isinstance(v, bool) for v in values):
        return "bool"
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float"
    return "str"


def write_geopackage(report: dict, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the tie points as the GeoPackage point layer :data:`LAYER` (reference CRS). Atomic.

    Needs georeferenced images (points at ``ref_map``); fields as in the module docstring.
    """
    import fiona
    from fiona.crs import CRS as FionaCRS

    records = [r for r in tie_point_records(report) if r["ref_map_x"] is not None]
    keys = _fields(records)
    schema = {
        "geometry": "Point",
        "properties": {k: _gpkg_type(k, records) for k in keys},
    }
    crs = FionaCRS.from_user_input(report["crs"]) if report.get("crs") else None
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.unlink()  # GDAL creates the GeoPackage itself
        with fiona.open(tmp, "w", driver="GPKG", layer=LAYER, schema=schema, crs=crs) as dst:
            dst.writerecords(
                {
                    "geometry": {"type": "Point", "coordinates": (r["ref_map_x"], r["ref_map_y"])},
                    "properties": {k: r.get(k) for k in keys},
                }
                for r in records
            )
    return Path(path).resolve()


def write_tie_points(report: dict, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the report's tie points to ``path``: ``.csv`` as CSV, ``.gpkg`` as a GeoPackage
    layer, else GeoJSON. Atomic."""
    if Path(path).suffix.lower() == ".gpkg":
        return write_geopackage(report, path, overwrite=overwrite)
    if Path(path).suffix.lower() == ".csv":
        text = to_csv(report)
    else:
        text = json.dumps(to_geojson(report), indent=1) + "\n"
    return write_text_atomic(text, path, overwrite=overwrite)
