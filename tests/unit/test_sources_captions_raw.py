"""Raw caption and classification adapters (issue 11) on files written in their public
layouts: TextCaps, COCO captions (``coco_captions``), Flickr30k (Karpathy), Stanford image
paragraphs, img2dataset WebDataset shards and class folders. The caption user turn is one
of LLaVA's 16 detailed-description requests, picked from the record key."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from PIL import Image
from vl_sources import (
    read,
    rejects,
    rows,
    save,
    write_flickr30k,
    write_image_folders,
    write_image_paragraph,
    write_textcaps,
    write_webdataset,
)

from pf_ray.data.images import ImageLoader
from pf_ray.data.sources.fields import pick
from pf_ray.data.sources.templates import CAPTION_PROMPTS


def test_caption_request_is_stable_and_spread() -> None:
    keys = [str(i) for i in range(800)]
    picks = [pick(CAPTION_PROMPTS, k) for k in keys]
    assert picks == [pick(CAPTION_PROMPTS, k) for k in keys]  # deterministic
    counts = Counter(picks)
    assert set(counts) == set(CAPTION_PROMPTS) and min(counts.values()) >= 25


def test_textcaps_groups_captions_per_image(tmp_path: Path) -> None:
    b = read("textcaps", write_textcaps(tmp_path), image_root="/textvqa")
    assert b["id"] == ["textcaps:011e7e629fb9ae7b", "textcaps:2", "textcaps:#2"]
    assert rejects(b) == {"textcaps:2": "missing_field", "textcaps:#2": "bad_record"}
    r = rows(b)["textcaps:011e7e629fb9ae7b"]
    assert r["task"] == "captions" and r["user"] == pick(CAPTION_PROMPTS, "011e7e629fb9ae7b")
    assert r["raw"] == ("A red bus with the number 42 on it.\n"
                        "A bus that says Route 42 on the front.")
    assert r["image"] == "/textvqa/train_images/011e7e629fb9ae7b.jpg"


def test_coco_captions_is_coco_with_llava_requests(tmp_path: Path) -> None:
    from test_coco_join import write_coco

    file = write_coco(tmp_path, "train2014", "COCO_train2014_000000215677.jpg")
    coco, captions = read("coco", file, "/c"), read("coco_captions", file, "/c")
    a, b = rows(coco)["coco:215677"], rows(captions)["coco_captions:215677"]
    assert b["user"] == pick(CAPTION_PROMPTS, "215677") and b["user"] in CAPTION_PROMPTS
    assert a["user"] == "Describe the following image in detail."
    assert (a["raw"], a["boxes"], a["image"]) == (b["raw"], b["boxes"], b["image"])
    assert len(b["boxes"]) == 2 and b["task"] == "captions"
    assert rejects(captions) == {"coco_captions:9": "empty_text"}


def test_flickr30k_karpathy(tmp_path: Path) -> None:
    b = read("flickr30k", write_flickr30k(tmp_path), image_root="/f30k/flickr30k-images")
    assert b["id"] == ["flickr30k:1000092795", "flickr30k:10002456", "flickr30k:#2"]
    assert rejects(b) == {"flickr30k:10002456": "empty_text", "flickr30k:#2": "missing_field"}
    r = rows(b)["flickr30k:1000092795"]
    assert r["raw"] == ("Two young guys with shaggy hair look at their hands.\n"
                        "Two friends enjoy time spent together.")
    assert r["image"] == "/f30k/flickr30k-images/1000092795.jpg"
    assert r["meta"]["split"] == "train" and r["task"] == "captions"


def test_image_paragraph_with_split_files(tmp_path: Path) -> None:
    b = read("image_paragraph", write_image_paragraph(tmp_path), image_root="/vg")
    assert rejects(b) == {"image_paragraph:2": "missing_field"}
    r, other = rows(b)["image_paragraph:2356347"], rows(b)["image_paragraph:3"]
    assert r["image"] == "/vg/VG_100K_2/2356347.jpg" and r["meta"]["split"] == "train"
    assert other["meta"]["split"] is None and other["image"] == "/vg/VG_100K/3.jpg"
    assert r["raw"] == ("A large building with bars on the windows in front of it. There is "
                        "people walking in front of the building.")
    assert r["task"] == "captions"


def test_webdataset_shard(tmp_path: Path) -> None:
    shard = write_webdataset(tmp_path)
    b = read("webdataset", shard)
    assert b["id"] == [f"webdataset:00000000{i}" for i in range(5)]
    # the corrupt jpg is the ingest job's image check's to reject (tested end to end)
    assert rejects(b) == {"webdataset:000000003": "image_missing",
                          "webdataset:000000004": "missing_field"}
    r = rows(b)["webdataset:000000000"]
    assert r["raw"] == "a red square on a plain background" and r["task"] == "captions"
    assert r["image"] == f"tar://000000000.jpg::{shard}"
    assert r["meta"]["url"] == "http://a/0.jpg" and r["meta"]["width"] == 40
    red = Image.open(io.BytesIO(r["image_bytes"])).convert("RGB").getpixel((5, 5))
    assert red[0] > 200 and red[2] < 40
    # the reference alone loads the same image through the tar member URI scheme
    assert ImageLoader().fetch(r["image"]) == r["image_bytes"]
    broken = save(tmp_path / "00001.tar", b"not a tar at all" * 40)
    assert list(rejects(read("webdataset", broken)).values()) == ["unreadable_file"]


def test_image_folder_classes(tmp_path: Path) -> None:
    root = write_image_folders(tmp_path / "pets")
    b = read("image_folder_classes", root, source="pets")
    assert b["id"] == ["pets:pets/golden_retriever/more/n02099601_7.JPEG",
                       "pets:pets/golden_retriever/n02099601_3004.jpg",
                       "pets:pets/tabby_cat/n02123045_1.png"]
    assert not rejects(b)
    r = rows(b)["pets:pets/tabby_cat/n02123045_1.png"]
    assert (r["task"], r["user"], r["raw"]) == ("classification", "What is this?",
                                                "a photo of a tabby cat.")
    assert r["image"] == str(root / "tabby_cat" / "n02123045_1.png")
    assert r["meta"]["class_folder"] == "tabby_cat"
    assert list(rejects(read("image_folder_classes", root / "README.txt")).values()) == [
        "unreadable_file"]


def test_object_store_glob_stays_in_its_segment() -> None:
    from pf_ray.data.sources.files import glob_match

    assert glob_match("b/cc3m/0000[0-6].tar", "b/cc3m/00003.tar")
    assert not glob_match("b/cc3m/0000[0-6].tar", "b/cc3m/00007.tar")
    assert not glob_match("b/cc3m/*.tar", "b/cc3m/old/00001.tar")
    assert not glob_match("b/cc3m/*.tar", "b/cc3m/00000_stats.json")
    assert glob_match("b/**/*.tar", "b/cc3m/old/00001.tar")


def test_double_star_matches_zero_or_more_segments_and_skips_hidden(tmp_path) -> None:
    from pf_ray.data.sources.files import expand_paths, glob_match

    assert glob_match("b/a/**/*.tar", "b/a/x.tar")  # zero segments, as glob.glob
    assert glob_match("b/a/**/*.tar", "b/a/c/d/x.tar")
    assert not glob_match("b/a/**/*.tar", "b/a/.cache/x.tar")
    assert not glob_match("b/a/*.tar", "b/a/.x.tar")
    for rel in ("x.tar", "c/d/y.tar"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    from pf_ray.specs import StorageConfig

    found = expand_paths(str(tmp_path / "**" / "*.tar"), StorageConfig())
    assert [f.removeprefix(str(tmp_path) + "/") for f in found] == ["c/d/y.tar", "x.tar"]
