#!/usr/bin/env python3
"""Object-CXR polygon annotations into boxes, exactly as the reference computes them
(mgca/preprocess/object_cxr.py, `polylabel_box`: the "object_cxr_to_coco" method), for `mgca data prepare object-cxr
--polygon-boxes TABLE.csv`.

For every polygon object (type 2) of train.csv and dev.csv: the closed polyline p0..pn-1, p0,
buffered by 100 px (Shapely defaults: round caps and joins, 16 segments per quarter circle); its
pole of inaccessibility c (shapely.ops.polylabel, tolerance 10); the polyline's bounds; the box
[cx - hx, cy - hy, 2 hx, 2 hy] with hx, hy the larger distances from c to the bounds.
Writes `image_name,object,x,y,w,h` (object = the index of the object in the annotation's
`;`-separated list).

    python golden/python/objectcxr/polygon_boxes.py OBJECT_CXR_ROOT OUT.csv   # needs shapely
"""
import csv
import sys
from pathlib import Path

from shapely.geometry import LineString
from shapely.ops import polylabel


def polygon_box(numbers):
    points = list(zip(numbers[0::2], numbers[1::2]))
    line = LineString(points + [points[0]])
    c = polylabel(line.buffer(100), tolerance=10)
    minx, miny, maxx, maxy = line.bounds
    hx = max(abs(minx - c.x), abs(maxx - c.x))
    hy = max(abs(miny - c.y), abs(maxy - c.y))
    return [c.x - hx, c.y - hy, 2 * hx, 2 * hy]


def main():
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_name", "object", "x", "y", "w", "h"])
        for name in ["train.csv", "dev.csv"]:
            for row in csv.DictReader(open(root / name)):
                annotation = row["annotation"] or ""
                for k, obj in enumerate(annotation.split(";")):
                    obj = obj.strip()
                    if obj.startswith("2"):
                        numbers = [int(v) for v in obj[2:].split()]
                        w.writerow([row["image_name"], k, *polygon_box(numbers)])


if __name__ == "__main__":
    main()
