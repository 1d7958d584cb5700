"""Next-item check on the device: a small causal transformer (SASRec-style) vs popularity, leave-one-out."""
import sys, time, types
sys.path.insert(0, ".")
pkg = types.ModuleType("recsys_embed.pipelines"); pkg.__path__ = ["pipelines"]
sys.modules["recsys_embed.pipelines"] = pkg
import numpy as np, pyarrow.parquet as pq, torch
from torch import nn
from recsys_embed.pipelines.synthetic_seq import write_sequences
from recsys_embed.metrics import hit_rate, ndcg
users = int(sys.argv[1]); L = 50; dev = "cuda"; torch.manual_seed(0)
t0 = time.time(); s = write_sequences("/tmp/seqdata", users, progress=False, overwrite=True); print(s.describe(), f"{time.time()-t0:.1f}s")
t = pq.read_table("/tmp/seqdata"); u = t["user_id"].to_numpy(); it = t["item_id"].to_numpy()
n_items = int(it.max()) + 1
bounds = np.flatnonzero(np.r_[True, u[1:] != u[:-1], True])
seqs = [it[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
def pad(x):
    x = x[-L:]; return np.r_[np.zeros(L - len(x), dtype=np.int64), x]
train_in = torch.tensor(np.stack([pad(s[:-2]) for s in seqs]), device=dev)
train_out = torch.tensor(np.stack([pad(s[1:-1]) for s in seqs]), device=dev)
test_in = torch.tensor(np.stack([pad(s[:-1]) for s in seqs]), device=dev)
truth = torch.tensor([s[-1] for s in seqs], device=dev)
class SAS(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.item = nn.Embedding(n_items, d, padding_idx=0); self.pos = nn.Embedding(L, d)
        layer = nn.TransformerEncoderLayer(d, 2, 4 * d, 0.2, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2); self.norm = nn.LayerNorm(d)
    def forward(self, x):
        h = self.item(x) + self.pos.weight[None]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), 1)
        h = self.norm(self.enc(h, mask=causal))
        return h @ self.item.weight.T
model = SAS().to(dev); opt = torch.optim.Adam(model.parameters(), lr=float(sys.argv[3]))
for ep in range(int(sys.argv[2])):
    perm = torch.randperm(len(seqs), device=dev)
    model.train()
    for i in range(0, len(seqs), 128):
        b = perm[i:i+128]; logits = model(train_in[b]); y = train_out[b]
        loss = nn.functional.cross_entropy(logits[y > 0], y[y > 0])
        opt.zero_grad(); loss.backward(); opt.step()
    if ep % 5 == 4: print("epoch", ep, "loss", float(loss), flush=True)
model.eval()
def ranks_of(scores, lo):
    x, y = test_in[lo:lo + len(scores)], truth[lo:lo + len(scores)]
    seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, x, True); seen[:, 0] = True
    assert not torch.isnan(scores).any(); scores = scores.masked_fill(seen, -1e9)
    return (scores > scores.gather(1, y[:, None])).sum(1).cpu().numpy() + 1
with torch.no_grad():
    r_model = np.concatenate([ranks_of(model(test_in[i:i+1024])[:, -1], i) for i in range(0, len(seqs), 1024)])
pop = torch.bincount(torch.tensor(np.concatenate([s[:-1] for s in seqs]), device=dev), minlength=n_items).float()
r_pop = np.concatenate([ranks_of(pop[None].expand(len(test_in[i:i+1024]), -1).clone(), i) for i in range(0, len(seqs), 1024)])
print(f"transformer HR@10 {hit_rate(r_model,10):.4f} NDCG@10 {ndcg(r_model,10):.4f} | popularity HR@10 {hit_rate(r_pop,10):.4f} NDCG@10 {ndcg(r_pop,10):.4f}")
