"""The photo store: the catalogue's cleaned photos, then those added through the API, at any size."""
from __future__ import annotations

from PIL import Image

from listings.config import Config
from listings.images import clean_photo
from listings.photos import PhotoStore


def store_at(tmp_path, size: int) -> PhotoStore:
    config = Config()
    config.data.artifacts_dir = str(tmp_path)
    config.data.image_size = size
    return PhotoStore.for_config(config)


def test_a_photo_added_at_another_image_size_is_found_kept_at_the_new_size_and_removed_at_both(tmp_path):
    """`fbm index` after a change of data.image_size found no photo of a listing added live: it
    lost its photos (or, without a text, the listing itself)."""
    before, after = store_at(tmp_path, 256), store_at(tmp_path, 320)
    image_id = before.add(clean_photo(_jpeg(tmp_path), 256))
    assert after.path(image_id) is None and before.added_at_another_size(image_id) is None
    earlier = after.added_at_another_size(image_id)
    assert earlier == before.path(image_id)

    assert after.add(clean_photo(earlier, 320), image_id) == image_id
    assert Image.open(after.path(image_id)).size == (320, 320)
    after.remove_added([image_id])
    assert before.path(image_id) is None and after.path(image_id) is None and after.added_at_another_size(image_id) is None


def _jpeg(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (400, 300), (200, 40, 40)).save(path, "JPEG")
    return path


def test_photos_no_listing_shows_and_half_written_ones_are_removed_at_any_size(tmp_path):
    """What a write killed between storing its photos and indexing its listing left behind."""
    store, other = store_at(tmp_path, 256), store_at(tmp_path, 320)
    photo = clean_photo(_jpeg(tmp_path), 256)
    shown, orphan = store.add(photo), store.add(photo)
    old_orphan = other.add(clean_photo(_jpeg(tmp_path), 320))
    (store.added_dir / "half.tmp").write_bytes(b"half")
    assert store.remove_unreferenced({shown, "a-catalogue-photo"}) == 3
    assert store.path(shown) is not None and store.path(orphan) is None and other.path(old_orphan) is None
    assert sorted(path.name for path in store.added_dir.iterdir()) == [f"{shown}.jpg"]
