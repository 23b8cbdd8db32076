"""Remote-sensing caption and detection releases written in their public layouts: RET-3's
Karpathy files (RSICD, UCM-captions, Sydney-captions), DIOR and HRRSD (Pascal-VOC XML
with ImageSets/Main split lists) and DOTA (labelTxt files, PNG images).

Each ``write_*`` writes one dataset's files under a folder, good records and the broken
ones the adapters must reject, and returns the path a spec's ``source.path`` names (the
docstrings list the records). Shared by the adapter unit tests and any ingest test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from vl_sources import save


def _sentences(imgid: int, first_sentid: int, raws: list[str]) -> list[dict[str, Any]]:
    return [{"tokens": raw.lower().rstrip(" .").split(), "raw": raw, "imgid": imgid,
             "sentid": first_sentid + k} for k, raw in enumerate(raws)]


def _karpathy(dataset: str, entries: list[tuple[str, str, list[str]]]) -> dict[str, Any]:
    images, sentid = [], 0
    for imgid, (filename, split, raws) in enumerate(entries):
        images.append({"filename": filename, "imgid": imgid, "split": split,
                       "sentids": list(range(sentid, sentid + len(raws))),
                       "sentences": _sentences(imgid, sentid, raws)})
        sentid += len(raws)
    return {"images": images, "dataset": dataset}


def write_ret3(folder: Path) -> list[Path]:
    """``RSICD/dataset_rsicd.json``, ``UCM_captions/dataset.json``,
    ``Sydney_captions/dataset.json`` (images not written: the adapter names them).

    RSICD: airport_1.jpg (train; 5 sentences, 3 distinct: RSICD's padding),
    bareland_2.jpg (val; no sentences), an entry without filename.
    UCM: 1.tif (train; 5 sentences, UCM's spaced full stops).
    Sydney: 1.tif (test; 2 sentences, one blank) -- same file name as UCM's.
    """
    plane = "Many planes are parked next to a long building in an airport."
    rsicd = _karpathy("rsicd", [
        ("airport_1.jpg", "train", [plane, "Several aircraft are parked around the terminal.",
                                    plane, "  An airport with many planes.  ", plane]),
        ("bareland_2.jpg", "val", [])])
    rsicd["images"].append({"imgid": 2, "split": "test", "sentids": [9],
                            "sentences": _sentences(2, 9, ["A piece of bare land."])})
    ucm = _karpathy("ucm", [("1.tif", "train", [
        "A residential area with houses arranged neatly .",
        "A residential area with houses arranged neatly and some roads go through this area .",
        "A residential area with houses arranged neatly .",
        "A residential area with houses arranged neatly while many plants on the roadside .",
        "A residential area with houses arranged neatly and some railways beside ."])])
    sydney = _karpathy("sydney", [("1.tif", "test", [
        "An industrial area with many white buildings .", " "])])
    return [save(folder / "RSICD" / "dataset_rsicd.json", rsicd),
            save(folder / "UCM_captions" / "dataset.json", ucm),
            save(folder / "Sydney_captions" / "dataset.json", sydney)]


# ------------------------------------------------------------------ Pascal VOC


def voc_xml(filename: str | None, size: tuple[int, int] | None,
            objects: list[tuple[str, tuple[Any, Any, Any, Any], int | None]],
            head: str = "") -> str:
    """A VOC annotation as the releases write it (tabs, one element per line);
    ``difficult`` None: no ``<difficult>`` element (DIOR's horizontal set)."""
    lines = ["<annotation>", head] if head else ["<annotation>"]
    if filename is not None:
        lines.append(f"\t<filename>{filename}</filename>")
    lines.append("\t<source>\n\t\t<database>DIOR</database>\n\t</source>")
    if size is not None:
        lines.append(f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}"
                     "</height>\n\t\t<depth>3</depth>\n\t</size>")
    lines.append("\t<segmented>0</segmented>")
    for name, (x1, y1, x2, y2), difficult in objects:
        lines.append(f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>")
        if difficult is not None:
            lines.append(f"\t\t<truncated>0</truncated>\n\t\t<difficult>{difficult}"
                         "</difficult>")
        lines.append(f"\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
                     f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n"
                     "\t</object>")
    lines.append("</annotation>\n")
    return "\n".join(lines)


def write_dior(folder: Path) -> Path:
    """DIOR under ``folder``: ``ImageSets/Main/{train,val,test}.txt``,
    ``Annotations/Horizontal Bounding Boxes/*.xml`` (+ one oriented XML, not read),
    ``JPEGImages-trainval/`` (only 00003.jpg is drawn, 800x400: it is the one whose XML
    lacks <size>). Returns ``train.txt``, which lists:

    00001: 2 airplanes, 1 Expressway-Service-area, 1 vehicle (800x800; a box past the edge);
    00002: no objects; 00003: no <size> (read from the image), 1 storagetank;
    00004: malformed XML; 00005: listed, no XML; 00006: an object with xmin 'abc';
    00007: no <size> and no image (image_missing).
    """
    boxes = folder / "Annotations" / "Horizontal Bounding Boxes"
    save(boxes / "00001.xml", voc_xml("00001.jpg", (800, 800), [
        ("airplane", (80, 160, 240, 320), None),
        ("Expressway-Service-area", (400, 400, 880, 800), None),
        ("airplane", (0, 0, 400, 80), None),
        ("vehicle", (600, 40, 640, 80), None)]))
    save(boxes / "00002.xml", voc_xml("00002.jpg", (800, 800), []))
    save(boxes / "00003.xml", voc_xml("00003.jpg", None, [
        ("storagetank", (40, 80, 120, 200), None)]))
    save(boxes / "00004.xml", "<annotation><filename>00004.jpg</filename><object>")
    save(boxes / "00006.xml", voc_xml("00006.jpg", (800, 800), [
        ("ship", ("abc", 1, 2, 3), None)]))
    save(boxes / "00007.xml", voc_xml("00007.jpg", None, [("dam", (1, 2, 3, 4), None)]))
    save(folder / "Annotations" / "Oriented Bounding Boxes" / "00001.xml", "<annotation/>")
    image = folder / "JPEGImages-trainval" / "00003.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (800, 400), (90, 120, 60)).save(image, quality=90)
    save(folder / "ImageSets" / "Main" / "val.txt", "00008\n")
    save(folder / "ImageSets" / "Main" / "test.txt", "11726\n")
    return save(folder / "ImageSets" / "Main" / "train.txt",
                "00001\n00002\n00003\n00004\n00005\n00006\n00007\n")


def write_hrrsd(folder: Path) -> Path:
    """HRRSD under ``folder/OPT2017``: ``ImageSets/Main/{train,trainval,...}.txt`` and a
    per-class list, ``Annotations/*.xml`` as in the TGRS-HRRSD-Dataset repository. Returns
    ``train.txt``, which lists 00001 (1 airplane, 1272x1504, as the repository's 00001.xml),
    00017 (2 T junctions, one difficult, and a parking lot) and 00018 (an object without
    <bndbox>)."""
    root = folder / "OPT2017"
    head = ("\t<folder>OPTIMAL_Z</folder>")
    save(root / "Annotations" / "00001.xml", voc_xml(
        "00001.jpg", (1272, 1504), [("airplane", (453, 556, 552, 692), 0)], head))
    save(root / "Annotations" / "00017.xml", voc_xml("00017.jpg", (1000, 500), [
        ("T junction", (100, 50, 300, 250), 0), ("parking lot", (500, 0, 1000, 500), 0),
        ("T junction", (0, 0, 10, 10), 1)], head))
    save(root / "Annotations" / "00018.xml",
         "<annotation>\n\t<filename>00018.jpg</filename>\n\t<size><width>10</width>"
         "<height>10</height></size>\n\t<object>\n\t\t<name>ship</name>\n\t</object>\n"
         "</annotation>\n")
    save(root / "ImageSets" / "Main" / "airplane_train.txt", " 00001  1\n 00017 -1\n")
    save(root / "ImageSets" / "Main" / "trainval.txt", "00001\n00017\n00018\n")
    return save(root / "ImageSets" / "Main" / "train.txt", "00001\n00017\n00018\n")


# ------------------------------------------------------------------ DOTA


def png(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 60, 80)).save(path, format="PNG")
    return path


def write_dota(folder: Path) -> Path:
    """DOTA-v1.0 ``train/``: ``images/*.png`` and ``labelTxt-v1.0/labelTxt/*.txt``.
    Returns the labelTxt folder, which holds:

    P0000: 1000x500 png; 2 small-vehicle (one difficult, one polygon past the edge),
    1 plane; P0001: gsd null, only the header (no objects); P0002: a line of 8 fields;
    P0003: a non-numeric coordinate; P0004: no image; P0005: 9 fields (no difficult).
    """
    images = folder / "train" / "images"
    labels = folder / "train" / "labelTxt-v1.0" / "labelTxt"
    png(images / "P0000.png", (1000, 500))
    png(images / "P0001.png", (64, 64))
    png(images / "P0005.png", (200, 100))
    save(labels / "P0000.txt",
         "imagesource:GoogleEarth\ngsd:0.146343590398\n"
         "100.0 50.0 200.0 50.0 200.0 150.0 100.0 150.0 small-vehicle 0\n"
         "950 400 1050 400 1050 550 950 550 small-vehicle 1\n"
         "300 100 500 50 550 250 350 300 plane 0\n")
    save(labels / "P0001.txt", "imagesource:GF2\ngsd:null\n")
    save(labels / "P0002.txt", "imagesource:GoogleEarth\ngsd:0.5\n"
         "1 2 3 4 5 6 7 8\n")
    save(labels / "P0003.txt", "imagesource:GoogleEarth\ngsd:0.5\n"
         "1 2 3 4 5 6 7 x ship 0\n")
    save(labels / "P0004.txt", "imagesource:GoogleEarth\ngsd:0.5\n"
         "1 2 3 4 5 6 7 8 harbor 0\n")
    save(labels / "P0005.txt", "20 10 60 10 60 50 20 50 container-crane\n")
    save(folder / "train" / "labelTxt-v1.0" / "trainset_reclabelTxt" / "P0000.txt",
         "imagesource:GoogleEarth\ngsd:0.146343590398\n")
    return labels
