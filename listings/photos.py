"""Listing photos by id, as every stage after `fbm prepare` finds them: the catalogue's cleaned
photos, then those added with listings through the API (`POST /listings`).

The store of added photos lives here, with the listing data, rather than in `api/`: the index
rebuild (`retrieval.build`) embeds the listings added live from their stored photos, and a stage
never imports a later one."""
from __future__ import annotations

import uuid
from pathlib import Path

from PIL import Image

from listings.artifacts import write_atomic
from listings.config import Config
from listings.data import photo_path
from listings.images import STORED_JPEG, stored_jpeg


class PhotoStore:
    """Listing photos by id: the catalogue's cleaned-image cache, then photos added through the API.

    Ids are validated by the caller (`listings.data.ID_PATTERN`); a path is only ever built here, from an id.
    """

    def __init__(self, catalogue_dir: Path, added_dir: Path):
        self.catalogue_dir = Path(catalogue_dir)
        self.added_dir = Path(added_dir)

    @classmethod
    def for_config(cls, config: Config) -> "PhotoStore":
        return cls(config.paths.clean_images(config.data.image_size), config.paths.added_photos(config.data.image_size))

    def path(self, image_id: str) -> Path | None:
        for directory in (self.catalogue_dir, self.added_dir):
            candidate = photo_path(directory, image_id)
            if candidate.is_file():
                return candidate
        return None

    def added_at_another_size(self, image_id: str) -> Path | None:
        """A photo added through the API while `data.image_size` was another size: it is in that
        size's folder beside this one's (`fbm index` cleans it again at this size)."""
        for directory in sorted(self._added_dirs()):
            candidate = photo_path(directory, image_id)
            if directory != self.added_dir and candidate.is_file():
                return candidate
        return None

    def _added_dirs(self) -> list[Path]:
        return [path for path in self.added_dir.parent.glob("photos_*") if path.is_dir()]

    def add(self, photo: Image.Image, image_id: str | None = None) -> str:
        """Store a cleaned photo durably (written, flushed, then renamed into place), under a new id
        unless it is given one."""
        image_id = image_id or str(uuid.uuid4())
        write_atomic(photo_path(self.added_dir, image_id), photo.info.get(STORED_JPEG) or stored_jpeg(photo))  # as cleaned: no second encoding
        return image_id

    def remove_unreferenced(self, referenced: set[str]) -> int:
        """Delete the added photos no listing shows, and half-written ones: those of a write killed
        between storing its photos and indexing its listing, or after replacing or deleting it and
        before removing the old photos. Only for the one process that writes (`fbm serve`, at
        start-up); returns how many went."""
        removed = 0
        for directory in self._added_dirs():
            for path in directory.iterdir():
                if path.suffix == ".tmp" or (path.suffix == ".jpg" and path.stem not in referenced):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def remove_added(self, image_ids: list[str]) -> None:
        """Delete photos added through the API, at every size they were stored at; catalogue photos
        are never touched."""
        for directory in self._added_dirs():
            for image_id in image_ids:
                photo_path(directory, image_id).unlink(missing_ok=True)
