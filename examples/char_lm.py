"""A character-level transformer language model (a tiny nanoGPT) and its data: windows of a text file that ships with Python.

From the repository root (so that `examples.char_lm` is importable, as in examples/char_lm.yaml):

    mlhpc train examples/char_lm.yaml --run-dir runs/char_lm

The model's output is (batch, vocab, sequence), the layout `F.cross_entropy` takes, so the built-in loss and the
`perplexity` metric work unchanged.
"""
import argparse, inspect
from pathlib import Path
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from ml_hpc.core import MlhpcError
from ml_hpc.datasets import data_root

def default_text()->Path:
    "The source of Python's argparse module: about 100 kB of English and code that every Python installation has."
    return Path(inspect.getsourcefile(argparse))

def windows(ids, block_size, starts): # token ids, context length, where each window starts
    "(input, target) pairs: `block_size` characters and the same shifted by one."
    w = ids.unfold(0, block_size + 1, 1)[starts]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()

def char_text(path:str="", # a UTF-8 text file (relative: under $MLHPC_DATA_DIR, else $DATA_DIR); empty: Python's argparse.py
              block_size:int=64, # characters per sample (the context length)
              n_samples:int=8192, # training windows, drawn at random (fixed seed) from the training text
              val_fraction:float=0.1): # the end of the text held out for validation
    "A text as windows of character indices: training windows at random places, validation windows tiling the held-out end."
    f = data_root(path) if path else default_text()
    text = f.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text])
    n_val = int(len(ids) * val_fraction)
    if n_val <= block_size or len(ids) - n_val <= block_size: raise MlhpcError(f"the text {f} has {len(ids)} characters, too few for block_size {block_size} with val_fraction {val_fraction}", "use a longer text or a smaller data.block_size")
    train, valid = ids[:-n_val], ids[-n_val:]
    tr = windows(train, block_size, torch.randint(0, len(train) - block_size, (n_samples,), generator=torch.Generator().manual_seed(0)))
    va = windows(valid, block_size, torch.arange(0, len(valid) - block_size, block_size))
    info = dict(num_classes=len(vocab), input_shape=[block_size], n_train=n_samples, n_valid=len(va[0]), text=str(f), n_chars=len(text), vocab="".join(vocab))
    return TensorDataset(*tr), TensorDataset(*va), info

class CausalSelfAttention(nn.Module):
    "Multi-head self-attention in which each position sees only itself and earlier ones (an explicit causal mask: on a CPU, about twice as fast as `is_causal=True` for heads this small)."
    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        self.qkv, self.proj, self.n_head, self.dropout = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd), n_head, dropout
        self.register_buffer("causal", torch.ones(block_size, block_size, dtype=torch.bool).tril(), persistent=False)
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.causal[:T, :T], dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

class Block(nn.Module):
    "A pre-norm transformer block: attention, then a two-layer MLP, each added to the residual stream."
    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(n_embd), CausalSelfAttention(n_embd, n_head, block_size, dropout), nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout))
    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

class GPT(nn.Module):
    "Token and position embeddings, transformer blocks, and a head tied to the token embedding; logits as (batch, vocab, sequence)."
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, dropout):
        super().__init__()
        self.tok, self.pos, self.drop = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd), nn.Dropout(dropout)
        self.blocks, self.ln_f = nn.Sequential(*[Block(n_embd, n_head, block_size, dropout) for _ in range(n_layer)]), nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(self._init)
        self.head.weight = self.tok.weight
    def _init(self, m):
        if isinstance(m, (nn.Linear, nn.Embedding)): nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None: nn.init.zeros_(m.bias)
    def forward(self, idx):
        x = self.drop(self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device)))
        return self.head(self.ln_f(self.blocks(x))).transpose(1, 2)

def make_gpt(info:dict, # data facts: num_classes (the vocabulary size) and input_shape [sequence length]
             n_layer:int=2, # transformer blocks
             n_head:int=4, # attention heads per block
             n_embd:int=64, # width of the residual stream (a multiple of n_head)
             block_size:int=64, # longest context the position embedding covers (at least the data's block_size)
             dropout:float=0.0): # dropout on embeddings, attention and MLP outputs
    "A character-level GPT for the data described by `info`."
    if n_embd % n_head: raise MlhpcError(f"model.n_embd {n_embd} is not a multiple of model.n_head {n_head}", "make n_embd a multiple of n_head")
    if info["input_shape"][0] > block_size: raise MlhpcError(f"the data's windows have {info['input_shape'][0]} characters but model.block_size is {block_size}", "set model.block_size to at least data.block_size")
    return GPT(info["num_classes"], block_size, n_layer, n_head, n_embd, dropout)

@torch.no_grad()
def sample(model, vocab:str, # a trained GPT and the vocabulary (config.yaml's inferred.vocab)
           prompt:str="def ", n:int=200, temperature:float=0.8, seed:int=0)->str:
    "Continue `prompt` by `n` characters drawn from the model."
    model.eval(); g = torch.Generator().manual_seed(seed)
    idx = torch.tensor([[vocab.index(c) for c in prompt]])
    for _ in range(n):
        logits = model(idx[:, -model.pos.num_embeddings:])[:, :, -1] / temperature
        idx = torch.cat([idx, torch.multinomial(logits.softmax(-1), 1, generator=g)], dim=1)
    return "".join(vocab[i] for i in idx[0].tolist())
