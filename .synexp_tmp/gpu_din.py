"""Tuning check on the device: generate synthetic CTR variants in memory, train no-history / mean-pooling /
DIN-attention models, compare test AUC with the oracle. Not part of the repo."""
import json, sys, time, types
sys.path.insert(0, ".")
pkg = types.ModuleType("recsys_embed.pipelines"); pkg.__path__ = ["pipelines"]
sys.modules["recsys_embed.pipelines"] = pkg
import numpy as np, pyarrow as pa, torch
from torch import nn
from recsys_embed.pipelines import synthetic_ctr as sc
from recsys_embed.metrics import auc

dev = "cuda"
ROWS, EPOCHS = int(sys.argv[1]), int(sys.argv[2])
variants = json.loads(sys.argv[3])
poolings = sys.argv[4].split(",") if len(sys.argv) > 4 else ["none", "mean", "attention"]
cats = ["user_id","item_id","item_category","item_brand","user_age","user_gender","user_city","hour","device"]
D = 16

def generate(overrides):
    rng = np.random.default_rng(0)
    world = sc._CtrWorld(rng, ROWS, sc.ClickModel(**overrides))
    tabs = [world.block(rng, min(sc.BLOCK_ROWS, ROWS - lo)) for lo in range(0, ROWS, sc.BLOCK_ROWS)]
    return pa.concat_tables(tabs)

def tensors(t):
    X = {}
    for c in cats:
        a = t[c].combine_chunks()
        if pa.types.is_string(a.type) or c == "user_age":
            a = a.cast(pa.string()).dictionary_encode().indices
        X[c] = torch.tensor(np.asarray(a.to_numpy(zero_copy_only=False), dtype=np.int64) + 1, device=dev)
    H = {}
    for c in ("hist_item_id", "hist_item_category"):
        a = t[c].combine_chunks()
        offs = a.offsets.to_numpy(); flat = a.values.to_numpy()
        lens = np.diff(offs); n = len(lens)
        out = np.zeros((n, 50), dtype=np.int64)
        out[np.repeat(np.arange(n), lens), np.arange(len(flat)) - np.repeat(offs[:-1], lens)] = flat
        H[c] = torch.tensor(out, device=dev)
    num = np.stack([np.log1p(t[c].to_numpy().astype(np.float64)) for c in ("price","item_clicks","user_activity")], 1)
    num = (num - num.mean(0)) / num.std(0)
    return X, H, torch.tensor(num, dtype=torch.float32, device=dev), torch.tensor(t["label"].to_numpy(), dtype=torch.float32, device=dev), t["p_true"].to_numpy()

class Model(nn.Module):
    def __init__(self, pooling, sizes):
        super().__init__()
        self.pooling = pooling
        self.emb = nn.ModuleDict({c: nn.Embedding(sizes[c], D) for c in cats})
        n_in = len(cats) * D + 3 + (2 * D if pooling != "none" else 0)
        self.att = nn.Sequential(nn.Linear(8 * D, 36), nn.PReLU(), nn.Linear(36, 1))
        self.mlp = nn.Sequential(nn.Linear(n_in, 200), nn.ReLU(), nn.Linear(200, 80), nn.ReLU(), nn.Linear(80, 1))
    def forward(self, X, H, NUM, idx):
        e = {c: self.emb[c](X[c][idx]) for c in cats}
        parts = [e[c] for c in cats] + [NUM[idx]]
        if self.pooling != "none":
            hi, hc = H["hist_item_id"][idx], H["hist_item_category"][idx]
            mask = hi > 0
            k = torch.cat([self.emb["item_id"](hi), self.emb["item_category"](hc)], -1)
            q = torch.cat([e["item_id"], e["item_category"]], -1)[:, None].expand_as(k)
            if self.pooling == "mean":
                w = mask.float() / mask.sum(1, keepdim=True).clamp(min=1)
            elif self.pooling == "sum":
                w = mask.float()
            else:
                s = self.att(torch.cat([q, k, q - k, q * k], -1)).squeeze(-1).masked_fill(~mask, -1e9)
                w = torch.softmax(s, 1) * mask.any(1, keepdim=True)
            parts.append((w[..., None] * k).sum(1))
        return self.mlp(torch.cat(parts, -1)).squeeze(-1)

for overrides in variants:
    t0 = time.time(); t = generate(overrides); gen_s = time.time() - t0
    X, H, NUM, Y, P = tensors(t)
    sizes = {c: int(X[c].max()) + 1 for c in cats}
    sizes["item_id"] = max(sizes["item_id"], int(H["hist_item_id"].max()) + 2)
    sizes["item_category"] = max(sizes["item_category"], int(H["hist_item_category"].max()) + 2)
    n_train = int(ROWS * 0.8); te = torch.arange(n_train, ROWS, device=dev)
    y_te = Y[te].cpu().numpy()
    res = {"pos_rate": round(float(Y.mean()), 4), "oracle_test": round(auc(P[n_train:], y_te), 4), "gen_s": round(gen_s, 1)}
    for pooling in poolings:
        for n_tr in (100_000, n_train):
            torch.manual_seed(0)
            model = Model(pooling, sizes).to(dev); opt = torch.optim.Adam(model.parameters(), lr=2e-3)
            for ep in range(EPOCHS if n_tr == n_train else 1):
                perm = torch.randperm(n_tr, device=dev)
                for i in range(0, n_tr, 512):
                    idx = perm[i:i+512]
                    loss = nn.functional.binary_cross_entropy_with_logits(model(X, H, NUM, idx), Y[idx])
                    opt.zero_grad(); loss.backward(); opt.step()
            with torch.no_grad():
                s = torch.cat([model(X, H, NUM, te[i:i+8192]) for i in range(0, len(te), 8192)]).cpu().numpy()
            res[f"{pooling}@{n_tr//1000}k"] = round(auc(s, y_te), 4)
    print(json.dumps({"variant": overrides, **res}), flush=True)
