"""The linear probe's data side: objective, gradient, Hessian-vector products and the Hessian's diagonal of
Σ_i CE_i + wd/2 ‖W‖² in the eigenbasis of XᵀX/n, computed in float64 over row chunks of the features.

Small problems keep one float64 copy of the features rotated into the eigenbasis (`copy_bytes`): the products then
run in the (possibly fewer) kept directions. Large ones never copy the features as a whole: each pass streams
row chunks of the caller's (float32) tensors, upcast and standardised chunk by chunk, and rotates the K x D weights
instead (W_raw = W·Qᵀ, a K·D·d product per pass, small beside N·D·K when N ≫ D). Float64 products of float32
values are exact, so both storages compute the same objective up to summation order. Streamed problems run their
Hessian-vector products (which only steer the CG step) in float32: see `_hess_vec_float32`.
"""
from __future__ import annotations

import torch

from ..errors import CellError

COPY_BYTES = 256 << 20  # largest float64 copy of the features kept resident (bigger: streamed row chunks)
CHUNK_BYTES = 32 << 20  # float64 bytes of one streamed row chunk (and of the per-chunk N x K temporaries), CPU
CHUNK_BYTES_CUDA = 1 << 30  # on a GPU: fewer, larger products (kernel launches per chunk), memory is plentiful


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device` (CUDA: the driver's count; CPU: /proc/meminfo's MemAvailable); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(b: float) -> str:
    return f"{b / 2 ** 30:.2f} GiB"


class Features:
    """`x`: one feature tensor or a list of row blocks (train and val for the refit: never concatenated); `shift`
    and `scale` ([D]): the standardisation (x - shift) / scale, applied chunk by chunk in float64 (folded into the
    vector for the float32 Hessian products), so standardised features are never materialised either."""

    def __init__(self, x, y, k, *, shift=None, scale=None, copy_bytes=None, chunk_bytes=None, hess_float32=True):
        copy_bytes = COPY_BYTES if copy_bytes is None else copy_bytes
        self.parts = list(x) if isinstance(x, (list, tuple)) else [x]
        self.n, dim = sum(len(t) for t in self.parts), self.parts[0].shape[1]
        self.k, self.y, dev = k, y, self.parts[0].device
        self.shift = None if shift is None else shift.to(dev, torch.float64)
        self.scale = None if scale is None else scale.to(dev, torch.float64)
        if chunk_bytes is None:
            chunk_bytes = CHUNK_BYTES_CUDA if dev.type == "cuda" else CHUNK_BYTES
        self.resident = self.n * dim * 8 <= copy_bytes
        rows = max(1, chunk_bytes // (8 * max(dim, k)))
        self.rows = self.n if self.resident and self.n * max(dim, k) * 8 <= chunk_bytes else rows
        # Memory this object allocates besides the caller's features: the softmax P (N x K), the chunk's
        # float64 rows and N x K temporaries (~4 of each), the Gram matrix and its eigenvectors, the copy.
        need = (self.n * k * 8 + 4 * self.rows * max(dim, k) * 8 + 3 * dim * dim * 8
                + (self.n * dim * 8 if self.resident else 0))
        free = available_bytes(dev)
        if free is not None and need > free:
            held = sum(t.numel() * t.element_size() for t in self.parts)
            raise CellError(f"linear probe: N x D x K = {self.n:,} x {dim:,} x {k:,} needs {_gib(need)} on {dev} "
                            f"besides the features ({_gib(held)}), only {_gib(free)} is "
                            f"free; use fewer samples or a device with more memory")
        self.stream_rows = rows
        self._buf = None  # the streamed chunks' float64 buffer (see _raw_chunks)
        # Streamed problems run their Hessian-vector products in float32 on the caller's rows (see hess_vec), when
        # those rows are float32 (float64 rows: the caller's precision is kept, and no per-chunk cast is made).
        self.hess_float32 = (hess_float32 and not self.resident
                             and all(t.dtype == torch.float32 for t in self.parts))
        gram = torch.zeros(dim, dim, dtype=torch.float64, device=dev)
        for _, xc in self._raw_chunks():
            gram.addmm_(xc.T, xc)
        gram /= self.n
        try:
            lam, q = torch.linalg.eigh(gram)
        except RuntimeError:  # LAPACK's eigh can fail to converge with many repeated (zero) eigenvalues, as dead
            # channels give (seen: EfficientNet-Lite at 32 px); the SVD of the PSD Gram matrix is its eigensystem.
            u, s, _ = torch.linalg.svd(gram)
            lam, q = s.flip(0), u.flip(1)
        del gram
        # Directions with no data (D > N, or dead channels) carry only the penalty, so their optimal weight is 0:
        # dropping them is exact and makes few-shot problems N-dimensional instead of D-dimensional.
        keep = lam > lam[-1] * dim * torch.finfo(torch.float64).eps
        self.lam, self.q = lam[keep].contiguous(), q[:, keep].contiguous()
        self.d = int(keep.sum())
        self.x = torch.cat([xc @ self.q for _, xc in self._raw_chunks()]) if self.resident else None
        if self.resident:
            self._buf = None
        self.p = torch.empty(self.n, k, dtype=torch.float64, device=dev)

    def _row_blocks(self):
        """(first row, the caller's rows as they are) over the parts, at most stream_rows rows per block."""
        start = 0
        for part in self.parts:
            for i in range(0, len(part), self.stream_rows):
                yield start + i, part[i:i + self.stream_rows]
            start += len(part)

    def _raw_chunks(self):
        """(first row, float64 standardised rows) over the parts, at most stream_rows rows per chunk. The rows are
        a view of one float64 buffer reused by every chunk (valid until the next chunk): a fresh 32 MiB tensor per
        chunk is a fresh mmap whose page faults were measured to cost more than the product itself (upcasting
        50,000 x 2,048: 0.32 s per pass fresh, 0.04 s into the reused buffer)."""
        if self._buf is None:
            self._buf = torch.empty(min(self.stream_rows, max(len(t) for t in self.parts)), self.parts[0].shape[1],
                                    dtype=torch.float64, device=self.parts[0].device)
        for i, src in self._row_blocks():
            xc = self._buf[:len(src)].copy_(src)  # never the caller's tensor: standardised in place below
            if self.shift is not None:
                xc.sub_(self.shift).div_(self.scale)
            yield i, xc

    def _chunks(self):
        if not self.resident:
            for i, xc in self._raw_chunks():
                yield i, xc, self.y[i:i + len(xc)]
            return
        for i in range(0, self.n, self.rows):
            yield i, self.x[i:i + self.rows], self.y[i:i + self.rows]

    def _in(self, W):  # rotated weights -> those that act on the stored features
        return W if self.resident else W @ self.q.T

    def _out(self, G):  # gradient-like K x D' products -> the rotated basis
        return G if self.resident else G @ self.q

    def loss(self, W, b, wd):
        Wx, total = self._in(W), 0.5 * wd * (W * W).sum()
        for i, xc, yc in self._chunks():
            z = torch.addmm(b, xc, Wx.T)
            total = total + (torch.logsumexp(z, 1) - z.gather(1, yc[:, None])[:, 0]).sum()
        return total

    def loss_grad(self, W, b, wd):
        """(objective, gW, gb, P): P (the softmax, kept for Hessian products) is one buffer, overwritten each call."""
        Wx, total = self._in(W), 0.5 * wd * (W * W).sum()
        gW = torch.zeros_like(Wx)
        gb = torch.zeros_like(b)
        for i, xc, yc in self._chunks():
            z = torch.addmm(b, xc, Wx.T)
            lse = torch.logsumexp(z, 1)
            total = total + (lse - z.gather(1, yc[:, None])[:, 0]).sum()
            p = torch.exp(z - lse[:, None], out=self.p[i:i + len(xc)])
            r = p.scatter_add(1, yc[:, None], torch.full_like(z[:, :1], -1.0))
            # Rᵀ X with W as [K, D] (nn.Linear's layout): both products read X row-major, measured 4x faster on CPU.
            gW.addmm_(r.T, xc)
            gb += r.sum(0)
        return total, self._out(gW) + wd * W, gb, self.p

    def hess_vec(self, p, V, c, wd):
        """H·(V, c) at the point whose softmax is p: per sample (diag(p) - ppᵀ)(x·V + c), back through X."""
        if self.hess_float32:
            return self._hess_vec_float32(p, V, c, wd)
        Vx = self._in(V)
        hW = torch.zeros_like(Vx)
        hc = torch.zeros_like(c)
        for i, xc, _ in self._chunks():
            pc = p[i:i + len(xc)]
            pu = pc * torch.addmm(c, xc, Vx.T)
            z = pu - pc * pu.sum(1, keepdim=True)
            hW.addmm_(z.T, xc)
            hc += z.sum(0)
        return self._out(hW) + wd * V, hc

    def _hess_vec_float32(self, p, V, c, wd):
        """The streamed Hessian product with float32 matrix products on the caller's rows as they are (no upcast,
        no standardised chunk: the standardisation is folded into V and back out of the product), each chunk's
        result accumulated in float64. Why this is safe: a Hessian product only steers the conjugate-gradient
        step; the objective, the gradient, the trust region's acceptance test and the stopping rule stay float64,
        so the point a fit returns meets the same stated gap (an inexact Hessian can cost iterations, not
        accuracy; trust-region Newton converges with any bounded model Hessian). Why: on the CPU float32 products
        run at twice float64's flop rate and skip the float64 copy of each chunk (measured 0.23 s against 0.44 s
        per product pair at 50,000 x 2,048 x 100 on two cores, the same Newton and CG counts). Folding the shift
        in costs relative precision where |shift| >> scale (uncentred products): again only the model Hessian's."""
        Vx = self._in(V)
        A, c0 = Vx, c
        if self.shift is not None:  # x_std·Aᵀ = x·(A/scale)ᵀ - (A/scale)·shift
            A = Vx / self.scale
            c0 = c - A @ self.shift
        A32, c32 = A.float(), c0.float()
        hW = torch.zeros_like(Vx)
        hc = torch.zeros_like(c)
        hc32 = torch.zeros_like(c)  # Σ of the float32 z that hW is built from: the shift's fold cancels exactly
        for i, xc in self._row_blocks():  # float32 rows (see __init__), used as they are
            pc = p[i:i + len(xc)]
            # The per-sample curvature (diag(p) - ppᵀ)u in float64: for a confident sample p_y = 1 - ε and the
            # result is O(ε), a difference of O(1) terms that float32 would round to noise (measured: at wd 1e-6
            # the fit stalled, the model Hessian's curvature lost in the saturated samples).
            pu = pc * torch.addmm(c32, xc, A32.T)
            z = pu - pc * pu.sum(1, keepdim=True)
            z32 = z.float()
            hW += (z32.T @ xc).double()
            hc += z.sum(0)
            hc32 += z32.sum(0, dtype=torch.float64)
        if self.shift is not None:  # Σ z_i (x_i - shift)/scale
            hW = (hW - hc32[:, None] * self.shift) / self.scale
        return self._out(hW) + wd * V, hc

    def hess_diag(self, p, wd):
        """The Hessian's diagonal, for the CG preconditioner: Σ_i x_ij² p_ik(1 - p_ik) + wd in the eigenbasis. With
        streamed features the rotated x_ij are not stored; Σ_i x_ij² s_ik ≈ n·λ_j·mean_i(s_ik) is used instead
        (exact when the curvature is uncorrelated with the squared coordinates)."""
        s = p * (1 - p)
        if self.resident:
            dW = torch.zeros(self.k, self.d, dtype=torch.float64, device=p.device)
            for i, xc, _ in self._chunks():
                dW.addmm_(s[i:i + len(xc)].T, xc * xc)
        else:
            dW = self.n * s.mean(0)[:, None] * self.lam[None, :]
        tiny = 1e-12 * self.n
        return dW + wd + tiny, s.sum(0) + tiny
