//! Object-CXR (foreign objects): `train.csv` / `dev.csv`, annotations into boxes, and the
//! reference's 90 / 10 split.
//!
//! An annotation is empty (no object) or objects separated by `;`, each `"<type> x y x y …"`:
//! rectangles (0) and ellipses (1) become their bounding box `[min x, min y, w, h]`; polygons (2)
//! become a box centred on the pole of inaccessibility of the polyline buffered by 100 px
//! (Shapely), which this crate does not reimplement: their boxes come from a table computed once
//! with Shapely (`golden/python/objectcxr/polygon_boxes.py`), as the spec advises.
//!
//! Spec: `data.md` §7.1–§7.4, §1.5.
//!
//! **Deviation:** polygon boxes are read from the Shapely table rather than computed; without
//! the table, a polygon annotation is an error naming the file and line.

use std::collections::HashMap;
use std::path::Path;

use super::DataError;
use super::sampling::{SplitSize, train_test_split};

/// One image and its boxes `[x, y, w, h]` in pixels (empty: no object).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub image_name: String,
    pub boxes: Vec<[f64; 4]>,
}

/// Polygon boxes by `(image_name, object index)`, from the Shapely table.
pub type PolygonBoxes = HashMap<(String, usize), [f64; 4]>;

/// Read the table written by `polygon_boxes.py`: `image_name,object,x,y,w,h`.
pub fn read_polygon_boxes(path: &Path) -> Result<PolygonBoxes, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::file(path, e.to_string()))?;
    read_polygon_boxes_from(file, path)
}

/// [`read_polygon_boxes`] from any reader; `path` is the name errors give. Never panics (the fuzz
/// harness's entry point).
pub fn read_polygon_boxes_from(input: impl std::io::Read, path: &Path) -> Result<PolygonBoxes, DataError> {
    let mut reader = csv::Reader::from_reader(input);
    let mut table = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let r = record.map_err(|e| DataError::row(path, line, e.to_string()))?;
        let num = |k: usize| -> Result<f64, DataError> {
            r.get(k).unwrap_or("").trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| {
                DataError::row(
                    path,
                    line,
                    format!("column {k} = {:?} is not a non-negative number", r.get(k).unwrap_or("")),
                )
            })
        };
        let object = r.get(1).unwrap_or("").trim().parse::<usize>().map_err(|_| {
            DataError::row(path, line, format!("object index {:?} is not a count", r.get(1).unwrap_or("")))
        })?;
        table.insert((r.get(0).unwrap_or("").to_string(), object), [num(2)?, num(3)?, num(4)?, num(5)?]);
    }
    Ok(table)
}

/// Parse one annotation (`line` for messages).
fn boxes(
    path: &Path,
    line: usize,
    image: &str,
    annotation: &str,
    polygons: Option<&PolygonBoxes>,
) -> Result<Vec<[f64; 4]>, DataError> {
    let mut out = Vec::new();
    if annotation.trim().is_empty() {
        return Ok(out);
    }
    for (k, object) in annotation.split(';').enumerate() {
        let object = object.trim();
        if object.is_empty() {
            continue;
        }
        let kind = object.as_bytes().first().copied().unwrap_or(b' ');
        match kind {
            b'0' | b'1' => {
                // After the one-byte (ASCII) type.
                let numbers: Vec<f64> = object
                    .get(1..)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(|t| t.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        DataError::row(
                            path,
                            line,
                            format!("object {k} of {image}: {object:?} has a value that is not a non-negative number"),
                        )
                    })?;
                if numbers.len() < 4 || !numbers.len().is_multiple_of(2) {
                    return Err(DataError::row(
                        path,
                        line,
                        format!("object {k} of {image}: {} coordinates", numbers.len()),
                    ));
                }
                let xs = numbers.iter().step_by(2);
                let ys = numbers.iter().skip(1).step_by(2);
                let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                out.push([x0, y0, x1 - x0, y1 - y0]);
            }
            b'2' => match polygons.and_then(|t| t.get(&(image.to_string(), k))) {
                Some(b) => out.push(*b),
                None => {
                    return Err(DataError::row(
                        path,
                        line,
                        format!(
                            "object {k} of {image} is a polygon: its box needs the Shapely table (run golden/python/objectcxr/polygon_boxes.py and pass --polygon-boxes)"
                        ),
                    ));
                }
            },
            _ => return Err(DataError::row(path, line, format!("object {k} of {image}: unknown type in {object:?}"))),
        }
    }
    Ok(out)
}

/// Read `train.csv` or `dev.csv` (`image_name, annotation`).
pub fn read_list(path: &Path, polygons: Option<&PolygonBoxes>) -> Result<Vec<Entry>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::file(path, e.to_string()))?;
    read_list_from(file, path, polygons)
}

/// [`read_list`] from any reader; `path` is the name errors give. Never panics (the fuzz
/// harness's entry point).
pub fn read_list_from(
    input: impl std::io::Read,
    path: &Path,
    polygons: Option<&PolygonBoxes>,
) -> Result<Vec<Entry>, DataError> {
    let mut reader = csv::Reader::from_reader(input);
    let headers = reader.headers().map_err(|e| DataError::file(path, e.to_string()))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| DataError::file(path, format!("no column `{name}`")))
    };
    let (name, annotation) = (column("image_name")?, column("annotation")?);
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let r = record.map_err(|e| DataError::row(path, line, e.to_string()))?;
        let image = r.get(name).unwrap_or("").to_string();
        if image.is_empty() {
            return Err(DataError::row(path, line, "empty image_name"));
        }
        let b = boxes(path, line, &image, r.get(annotation).unwrap_or(""), polygons)?;
        out.push(Entry { image_name: image, boxes: b });
    }
    if out.is_empty() {
        return Err(DataError::file(path, "no rows"));
    }
    Ok(out)
}

/// `(train, valid)` positions into `train.csv`: `train_test_split(test_size=0.1, random_state=0)`.
pub fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    train_test_split(n, SplitSize::TestFraction(0.1), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_boxes() {
        let p = Path::new("train.csv");
        let b = boxes(p, 2, "a.jpg", "0 10 20 50 80;1 5 5 15 25 10 30", None).unwrap();
        assert_eq!(b, vec![[10.0, 20.0, 40.0, 60.0], [5.0, 5.0, 10.0, 25.0]]);
        assert!(boxes(p, 2, "a.jpg", "", None).unwrap().is_empty());
        let err = boxes(p, 7, "b.jpg", "2 1 1 5 1 5 5", None).unwrap_err().to_string();
        assert!(err.contains("line 7") && err.contains("polygon"), "{err}");
        let table: PolygonBoxes = [(("b.jpg".to_string(), 1), [1.0, 2.0, 3.0, 4.0])].into();
        let b = boxes(p, 7, "b.jpg", "0 0 0 2 2;2 1 1 5 1 5 5", Some(&table)).unwrap();
        assert_eq!(b[1], [1.0, 2.0, 3.0, 4.0]);
        // Non-numbers, NaN, infinities, negatives and multi-byte characters after the type
        // are errors naming the line (the last one used to panic slicing inside a character).
        for bad in ["0 1 2 NaN 4", "0 1 2 inf 4", "0 -1 2 3 4", "0é 1 2 3 4", "1 x 1 2 2", "é 1 2"] {
            let err = boxes(p, 9, "c.jpg", bad, None).unwrap_err().to_string();
            assert!(err.contains("line 9"), "{bad}: {err}");
        }
        // data.md §7.3: 8,000 training images give 7,200 / 800.
        let (train, valid) = split(8_000);
        assert_eq!((train.len(), valid.len()), (7_200, 800));
    }
}
