"""Make a tiny Qwen3 model whose answers are scripted in its weights (run with the engine's Python).

    python make_model.py SPEC.json OUT_DIR

SPEC (written by :mod:`tests.realvllm.scripts`) holds the chat template, the corpus the
tokenizer is trained on, and the scripts: a trigger and the pieces of its answer, and a thinking
trigger with the pieces of its thought (which end with ``</think>``).

How the answers live in the weights (see research/real-vllm-cpu.md). The residual stream is
256 wide: dims 0–207 hold each token's embedding (random ±1; dim 0 is 1 for every token, dim 1
+1 for the last piece of an answer, dim 2 +1 for a trigger, dim 3 +1 for the last piece of a
thought, -1 elsewhere), dims 208–231 (A) and 232–255 (B)
are empty in every embedding and carry "which script is running" (one dim per script).

- Most of the time the next token depends on the current token alone: the lm_head row of token
  B is the embedding of token A when "after A comes B" (A·A = 208 against ~N(0, 14²) for any
  other pair, so a scripted successor wins by far at any temperature). Every piece of text is its
  own added token and appears in one place only, so it has one successor. The ``<|im_end|>`` row
  weighs dims 0 and 1 (150, 60): it follows the last piece of an answer, and it beats any
  unscripted token elsewhere (an unknown context ends the turn). ``</think>`` follows the last
  piece of every thought, so its row weighs dims 0 and 3 the same way (a sum of those pieces'
  embeddings would score high after unrelated tokens).
- ``</think>`` must be one token (vLLM's qwen3 parser finds it by id while streaming), yet each
  script's answer follows it. Layer 0's attention (head 0) lets every position look back at the
  trigger: keys are non-zero only for triggers (in the slowest-turning RoPE pair, so position
  hardly matters), the query is constant, and the trigger's value writes its script's dim in A.
  Layer 0's MLP copies A to B only at ``</think>`` (its gate opens on that token alone). The
  lm_head row of a script's first answer piece adds a weight on that script's dim in B.
- Everything else (layer 1, head 1, the other projections) is zero; every norm weight is one
  except the q/k norms that size the attention's scores.

The chat template ends the prompt with a trigger chosen from the conversation. Needs torch,
safetensors and tokenizers (the engine's venv has them); deterministic for a spec.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HIDDEN = 256
TOKEN_DIMS = 208  # embedding dims; A and B follow
A0, B0, SLOTS = 208, 232, 24
LAYERS = 2
HEADS = 2
KV_HEADS = 1
# The CPU attention kernel refuses head_dim 16 at the first request; 64 works.
HEAD_DIM = 64
INTERMEDIATE = 256
BPE_VOCAB = 640
SEED = 20261207
# The <|im_end|> row (see the module doc).
END_BASE = 150.0
END_LAST = 60.0
THINK_END_BASE = 60.0  # the </think> row: 60 + 150 after a thought, 60 - 150 elsewhere
THINK_END_LAST = 150.0
# RoPE (neox) pairs dim i with i + 32; pair 31 turns slowest (1e6^(-62/64) rad per position).
SLOW, SLOW_OTHER = 31, 30
QK_NORM = 3.0  # score for the trigger: 8*QK_NORM * 8*QK_NORM / 8 = 72
CONTEXT = 4.0  # what the trigger's value writes into A
GATE = 40.0  # MLP gate: +20 at </think>, below -8 elsewhere
COPY = 0.1  # down_proj: A (≈4) * silu(20) * COPY ≈ 8 in B
PICK = 16.0  # the first answer piece's weight on its script's dim in B

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Ordinary added tokens in Qwen's own tokenizer; the parsers look for them.
QWEN_ADDED = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>",
              "</tool_response>"]


def train_tokenizer(corpus: list[str], pieces: list[str], triggers: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_tokens([p for p in QWEN_ADDED if tokenizer.token_to_id(p) is None])
    tokenizer.add_tokens(triggers)
    # Scripted pieces last: the parsers' markers above keep their own ids.
    tokenizer.add_tokens([p for p in pieces if tokenizer.token_to_id(p) is None])
    return tokenizer


def _ids(tokenizer: Tokenizer, texts: list[str], where: str) -> list[int]:
    ids = [tokenizer.token_to_id(t) for t in texts]
    if None in ids:
        raise SystemExit(f"a piece of {where} is not one token: {texts}")
    return [i for i in ids if i is not None]


def successor_table(tokenizer: Tokenizer, scripts: list[dict]) -> dict[int, int]:
    """token id → the id that follows it wherever it appears (what follows ``</think>`` is
    chosen by the script, see :func:`weights`)."""
    table: dict[int, int] = {}
    end = tokenizer.token_to_id("<|im_end|>")
    think_end = tokenizer.token_to_id("</think>")

    def chain(ids: list[int], last: int | None) -> None:
        for current, following in zip(ids, [*ids[1:], last], strict=True):
            if following is None:
                continue
            if table.get(current, following) != following:
                raise SystemExit(f"token {current} has two successors ({scripts})")
            table[current] = following

    for script in scripts:
        answer = _ids(tokenizer, script["pieces"], script["name"])
        if script.get("trigger"):
            chain([*_ids(tokenizer, [script["trigger"]], script["name"]), *answer], end)
        else:
            chain(answer, end)
        thought = _ids(tokenizer, [script["thinking_trigger"], *script["thought"]],
                       script["name"])
        chain(thought, think_end)
    return table


def weights(tokenizer: Tokenizer, scripts: list[dict], table: dict[int, int]
            ) -> dict[str, torch.Tensor]:
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    end = tokenizer.token_to_id("<|im_end|>")
    think_end = tokenizer.token_to_id("</think>")
    if len(scripts) > SLOTS:
        raise SystemExit(f"at most {SLOTS} scripts (got {len(scripts)})")
    generator = torch.Generator().manual_seed(SEED)
    embed = torch.zeros(vocab, HIDDEN)
    embed[:, :TOKEN_DIMS] = torch.randint(0, 2, (vocab, TOKEN_DIMS),
                                          generator=generator).float() * 2 - 1
    embed[:, 0] = 1.0
    embed[:, 1] = -1.0
    embed[:, 2] = -1.0
    embed[:, 3] = -1.0
    for current, following in table.items():
        if following == end:
            embed[current, 1] = 1.0
        if following == think_end:
            embed[current, 3] = 1.0
    triggers: dict[int, int] = {}  # trigger id → script slot
    for slot, script in enumerate(scripts):
        for key in ("trigger", "thinking_trigger"):
            if script.get(key):
                triggers[tokenizer.token_to_id(script[key])] = slot
    for trigger in triggers:
        embed[trigger, 2] = 1.0

    lm_head = torch.zeros(vocab, HIDDEN)
    for current, following in table.items():
        if following not in (end, think_end):
            lm_head[following] += embed[current]
    for slot, script in enumerate(scripts):
        first = tokenizer.token_to_id(script["pieces"][0])
        lm_head[first] += embed[think_end]
        lm_head[first, B0 + slot] += PICK
    lm_head[end, 0] = END_BASE
    lm_head[end, 1] = END_LAST
    lm_head[think_end, 0] = THINK_END_BASE
    lm_head[think_end, 3] = THINK_END_LAST

    # Layer 0, head 0: every position attends to the trigger (see the module doc). The inputs
    # are RMS-normalised embeddings (dims 0 and 2 = ±1.11); keys and queries are re-normalised
    # per head by k_norm / q_norm, so only their directions count.
    q_proj = torch.zeros(HEADS * HEAD_DIM, HIDDEN)
    q_proj[SLOW, 0] = 1.0
    k_proj = torch.zeros(KV_HEADS * HEAD_DIM, HIDDEN)
    k_proj[SLOW, 0], k_proj[SLOW, 2] = 0.5, 0.5  # triggers
    k_proj[SLOW_OTHER, 0], k_proj[SLOW_OTHER, 2] = 0.5, -0.5  # everything else
    v_proj = torch.zeros(KV_HEADS * HEAD_DIM, HIDDEN)
    norm = float(TOKEN_DIMS) * (TOKEN_DIMS / HIDDEN) ** -0.5  # e·normalised(e)
    for trigger, slot in triggers.items():
        v_proj[slot] += embed[trigger] / norm
    o_proj = torch.zeros(HIDDEN, HEADS * HEAD_DIM)
    for slot in range(SLOTS):
        o_proj[A0 + slot, slot] = CONTEXT
    # MLP: channel `slot` = silu(gate) * up, gate open only at </think>, up = A[slot].
    gate = torch.zeros(INTERMEDIATE, HIDDEN)
    up = torch.zeros(INTERMEDIATE, HIDDEN)
    down = torch.zeros(HIDDEN, INTERMEDIATE)
    detector = embed[think_end] / float(TOKEN_DIMS)
    for slot in range(SLOTS):
        gate[slot] = GATE * detector
        gate[slot, 0] -= GATE * 0.5
        up[slot, A0 + slot] = 1.0
        down[B0 + slot, slot] = COPY

    tensors = {"model.embed_tokens.weight": embed, "lm_head.weight": lm_head,
               "model.norm.weight": torch.ones(HIDDEN)}
    shapes = {
        "self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
        "self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
        "self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
        "self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
        "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
        "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
        "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
    }
    layer0 = {"self_attn.q_proj.weight": q_proj, "self_attn.k_proj.weight": k_proj,
              "self_attn.v_proj.weight": v_proj, "self_attn.o_proj.weight": o_proj,
              "mlp.gate_proj.weight": gate, "mlp.up_proj.weight": up,
              "mlp.down_proj.weight": down}
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}."
        for name, shape in shapes.items():
            tensors[prefix + name] = layer0[name] if layer == 0 else torch.zeros(shape)
        for name, size in (("input_layernorm.weight", HIDDEN),
                           ("post_attention_layernorm.weight", HIDDEN)):
            tensors[prefix + name] = torch.ones(size)
        tensors[prefix + "self_attn.q_norm.weight"] = torch.full((HEAD_DIM,), QK_NORM)
        tensors[prefix + "self_attn.k_norm.weight"] = torch.full((HEAD_DIM,), QK_NORM)
    return {name: tensor.to(torch.bfloat16).contiguous() for name, tensor in tensors.items()}


def config(vocab: int, tokenizer: Tokenizer, max_positions: int) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "vocab_size": vocab,
        "bos_token_id": tokenizer.token_to_id("<|endoftext|>"),
        "eos_token_id": tokenizer.token_to_id("<|im_end|>"),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_cache": True,
    }


def make(spec: dict, out: Path) -> None:
    scripts = spec["scripts"]
    triggers = [t for s in scripts for t in (s.get("trigger"), s["thinking_trigger"]) if t]
    pieces = [p for s in scripts for p in [*s["pieces"], *s["thought"]]]
    tokenizer = train_tokenizer(spec["corpus"], pieces, triggers)
    table = successor_table(tokenizer, scripts)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    save_file(weights(tokenizer, scripts, table), str(out / "model.safetensors"),
              metadata={"format": "pt"})
    max_positions = int(spec["max_position_embeddings"])
    (out / "config.json").write_text(json.dumps(config(vocab, tokenizer, max_positions),
                                                indent=2))
    end = tokenizer.token_to_id("<|im_end|>")
    (out / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [end], "bos_token_id": tokenizer.token_to_id("<|endoftext|>")}))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_positions,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": spec["chat_template"],
    }, indent=2))
    (out / "spark-stack-scripts.json").write_text(json.dumps(
        {"scripts": scripts, "vocab": vocab}, indent=2))


if __name__ == "__main__":
    make(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
