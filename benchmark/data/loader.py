"""Batches of stored pixels on the run's device, transformed there.

`StoredImages` is a view (pixels, labels, transform); `batches()` yields (x, y) already on the device. On CUDA the
whole uint8 store is moved to the GPU once when it fits in a quarter of the free memory (then a batch is an index
gather: no host work per step); otherwise batches are gathered from the memory map into pinned memory by a
background thread one step ahead and copied without blocking. Shuffling and augmentation draw from generators
seeded by (seed, epoch), so an epoch is the same whether or not the run was interrupted before it.
"""
from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass, replace

import numpy as np
import torch

_RESIDENT: dict = {}  # (store file, device) -> device tensor, so cells of a group share one upload


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + salt) % (2 ** 63))


@dataclass
class StoredImages:
    pixels: np.ndarray  # uint8 [N, 3, S, S] (memmap) of the stored split
    labels: torch.Tensor  # int64 [len(positions)]
    positions: np.ndarray  # rows of `pixels` this view serves, in order
    transform: object  # callable (uint8 batch on device, generator) -> float batch

    def __len__(self):
        return len(self.positions)

    def with_transform(self, transform) -> "StoredImages":
        return replace(self, transform=transform)

    def subset(self, rows) -> "StoredImages":
        rows = np.asarray(rows)
        return replace(self, positions=self.positions[rows], labels=self.labels[torch.as_tensor(rows)])

    def batches(self, batch_size: int, device, *, shuffle=False, drop_last=False, seed=0, epoch=0):
        return Batches(self, batch_size, torch.device(device), shuffle, drop_last, seed, epoch)


def _resident(pixels: np.ndarray, device: torch.device):
    """The store on the GPU, uploaded once. Several stay resident (a training cell alternates between its train
    and val stores every epoch) while they fit in a quarter of free memory; the least recently used go first."""
    if device.type != "cuda":
        return None
    key = (getattr(pixels, "filename", None) or id(pixels), str(device))
    if key in _RESIDENT:
        _RESIDENT[key] = _RESIDENT.pop(key)  # most recently used last
        return _RESIDENT[key]
    while True:
        free, _ = torch.cuda.mem_get_info(device)
        if pixels.nbytes <= free // 4:
            break
        if not _RESIDENT:
            return None  # too large even alone: stream pinned batches instead
        _RESIDENT.pop(next(iter(_RESIDENT)))
        torch.cuda.empty_cache()
    _RESIDENT[key] = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    return _RESIDENT[key]


class Batches:
    def __init__(self, images: StoredImages, batch_size, device, shuffle, drop_last, seed, epoch):
        self.images, self.batch_size, self.device = images, int(batch_size), device
        self.shuffle, self.drop_last, self.seed, self.epoch = shuffle, drop_last, seed, epoch

    def __len__(self):
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self):
        n = len(self.images)
        if self.shuffle:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch, 1))
        else:
            order = torch.arange(n)
        return [order[i:i + self.batch_size] for i in range(0, len(self) * self.batch_size, self.batch_size)]

    def _host_batches(self, chunks):
        """Pinned uint8 batches gathered from the memmap; rows read in ascending order (sequential I/O)."""
        pin = self.device.type == "cuda"
        for idx in chunks:
            rows = self.images.positions[idx.numpy()]
            order = np.argsort(rows, kind="stable")
            x = np.empty((len(rows),) + self.images.pixels.shape[1:], dtype=np.uint8)
            x[order] = self.images.pixels[rows[order]]
            t = torch.from_numpy(x)
            yield (t.pin_memory() if pin else t), self.images.labels[idx]

    def _prefetched(self, chunks):
        if self.device.type != "cuda":
            yield from self._host_batches(chunks)
            return
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()

        def work():
            for item in itertools.chain(self._host_batches(chunks), [None]):  # None: the end
                while not stop.is_set():  # a consumer that stops early (e.g. one probe batch) ends this thread
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        threading.Thread(target=work, daemon=True).start()
        try:
            while (item := q.get()) is not None:
                yield item
        finally:
            stop.set()

    def __iter__(self):
        chunks = self._order()
        gen = epoch_generator(self.seed, self.epoch, 2)
        resident = _resident(self.images.pixels, self.device)
        if resident is not None:
            pos = torch.as_tensor(self.images.positions, device=self.device)
            labels = self.images.labels.to(self.device)
            for idx in chunks:
                idx = idx.to(self.device)
                yield self.images.transform(resident[pos[idx]], gen), labels[idx]
            return
        for x, y in self._prefetched(chunks):
            x = x.to(self.device, non_blocking=True)
            yield self.images.transform(x, gen), y.to(self.device, non_blocking=True)


class DatasetImages:
    """A torch `Dataset` of (tensor, label) behind the same `batches()` interface (tests, small tensor sets)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def batches(self, batch_size: int, device, *, shuffle=False, drop_last=False, seed=0, epoch=0):
        from torch.utils.data import DataLoader
        device = torch.device(device)

        class _Epochs:
            def __init__(self):
                self.epoch = epoch

            def set_epoch(self, e):
                self.epoch = e

            def _loader(self):
                g = epoch_generator(seed, self.epoch, 1)
                return DataLoader(dataset_, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=g)

            def __len__(self):
                return len(self._loader())

            def __iter__(self):
                for x, y in self._loader():
                    yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        dataset_ = self.dataset
        return _Epochs()


def as_images(data):
    """StoredImages and DatasetImages pass through; a plain Dataset is wrapped."""
    return data if hasattr(data, "batches") else DatasetImages(data)
