//! Object-CXR (foreign objects): `train.csv` / `dev.csv`, annotations into boxes, and the
//! reference's 90 / 10 split.
//!
//! An annotation is empty (no object) or objects separated by `;`, each `"<type> x y x y …"`:
//! rectangles (0) and ellipses (1) become their bounding box `[min x, min y, w, h]`; polygons (2)
//! become a box centred on the pole of inaccessibility of the polyline buffered by 100 px
//! (Shapely), which this crate does not reimplement: their boxes come from a table computed once
//! with Shapely (`golden/python/objectcxr/polygon_boxes.py`), so the numbers are Shapely's own.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/preprocess/object_cxr.py`
//! (`rectangle_box`, `polylabel_box`, `annotation_to_bbox`, `main`) and
//! `mgca/datasets/detection_dataset.py`, `OBJCXRDetectionDataset`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** polygon boxes are read from the Shapely table rather than computed; without
//! the table, a polygon annotation is an error naming the file and line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::DataError;
use super::sampling::{SplitSize, global_choice_second_draw, train_test_split};
use super::tables::{DatasetTables, PrepareOptions, Sources, Table, Task};

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

/// `Object-CXR`'s prepared tables for `mgca data prepare`: a 90/10 split of `train.csv`, `dev.csv` as test, and the 1 % and 10 % training subsets.
pub fn tables(options: &PrepareOptions, sources: &mut Sources) -> Result<DatasetTables, DataError> {
    let mut sampling = BTreeMap::new();
    if options.task != Task::Detection {
        return Err(DataError::file(&options.root, "Object-CXR has a detection task only"));
    }
    let polygons = match &options.polygon_boxes {
        // Hashed as a source (an absolute path stays absolute under the root).
        Some(p) => Some(read_polygon_boxes(&sources.read(&p.to_string_lossy())?)?),
        None => None,
    };
    let train_list = read_list(&sources.read("train.csv")?, polygons.as_ref())?;
    let dev_list = read_list(&sources.read("dev.csv")?, polygons.as_ref())?;
    let (train, valid) = split(train_list.len());
    let header = ["path", "image_name", "Target", "boxes_xywh"].map(String::from).to_vec();
    let table = |entries: &[Entry], folder: &str, positions: &[usize]| Table {
        header: header.clone(),
        rows: positions
            .iter()
            .map(|&i| {
                let e = &entries[i];
                let boxes: Vec<String> = e
                    .boxes
                    .iter()
                    .map(|b| format!("[{}]", b.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(", ")))
                    .collect();
                vec![
                    format!("{folder}/{}", e.image_name),
                    e.image_name.clone(),
                    u8::from(!e.boxes.is_empty()).to_string(),
                    format!("[{}]", boxes.join(", ")),
                ]
            })
            .collect(),
        class_column: Some(2),
    };
    let subset = |frac: f64| -> Vec<usize> {
        global_choice_second_draw(train.len(), frac, 42).into_iter().map(|i| train[i]).collect()
    };
    sampling.insert(
        "split".into(),
        "train_test_split(test_size=0.1, random_state=0) of train.csv: first part train, second valid (images from train/); test = dev.csv (images from dev/)".into(),
    );
    sampling.insert(
        "subsets".into(),
        "global NumPy choice(n, int(p·n), replace=False) after seed 42, second draw (the training set is built twice)"
            .into(),
    );
    if options.polygon_boxes.is_some() {
        sampling.insert("polygon_boxes".into(), "from the Shapely table given with --polygon-boxes".into());
    }
    let tables = vec![
        ("train.csv", table(&train_list, "train", &train)),
        ("valid.csv", table(&train_list, "train", &valid)),
        ("test.csv", table(&dev_list, "dev", &(0..dev_list.len()).collect::<Vec<_>>())),
        ("train_1pct.csv", table(&train_list, "train", &subset(0.01))),
        ("train_10pct.csv", table(&train_list, "train", &subset(0.1))),
    ];
    let leaks = "none known for Object-CXR".to_string();
    Ok(DatasetTables { tables, sampling, leaks, origins: Default::default() })
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
        // The reference's split of the real table: 8,000 training images give 7,200 / 800.
        let (train, valid) = split(8_000);
        assert_eq!((train.len(), valid.len()), (7_200, 800));
    }
}
