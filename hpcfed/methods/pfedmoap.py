"""pFedMoAP (Luo et al., ICLR'25), methods.md §3: a CoOp prompt per client, averaged across clients and also
published, so that other clients can download it as a fixed expert; a local attention gating network mixes the
text features of the client's own prompt and of K - 1 = 9 downloaded experts per image.

    logits = lambda * s * <img, text_own>  +  s * <pool(img), gate(pool(img); pool(text) of own + experts)>

img and text are L2-normalized CLIP features, s = logit_scale.exp() (100), lambda = 0.5, pool = stride-4 slicing
512 -> 128 of the normalized features (not normalized again). The second term is a raw dot product: the gated
feature is the attention's output projection as it comes out. Gating: multi-head attention, d = 128, 8 heads,
4 Linear(128, 128) (66,048 parameters), scores scaled by 10 (not 1/sqrt(head dim)), softmax over the experts,
no dropout, no residual. Without downloaded experts the logits are s * <img, text_own> alone (no lambda).

The prompt is personal for evaluation: each client is evaluated with its own trained prompt (and gating and the
experts it trained with); the FedAvg average only initializes the next local training (`evaluated_as_trained`).
A client that never trained is evaluated with the average, without experts. That is also what a new client gets
(partition.holdout_clients). The paper states no rule for a new client; the official code evaluates a never-trained
client with the global prompt (federated_main.py:408) and has no working path that gives it experts (see the
unselected-client note below), so: the global prompt and no expert, i.e. plain CLIP logits with the average prompt
(the initial gate is unused without experts). Adapting (train.holdout_steps), it meets the first-participation
rule below and trains its prompt alone. Giving it the experts nearest to the global prompt would be a guess.
Experts: a client's first participation (round 0 for everyone under full participation) downloads none and trains
its prompt on plain CLIP logits; afterwards it takes the latest prompts of all other clients that have one when at
most K clients have published, else the K - 1 nearest in L2 to its own latest trained prompt (its row of the
published table, equal to the copy it is evaluated with). Trainable per client: 8,192 + 66,048; per round a
participant uploads its prompt and downloads the global prompt plus up to 9 experts (counted as 8,192 + 9 x 8,192
floats every round: an upper bound, as a first participation downloads none).

Verified in the official code (github.com/ljaiverson/pFedMoAP, commit a481de3), where this module and methods.md
had it wrong before:
- evaluation: federated_main.py:381 tests a selected client right after its local training, with its own trained
  prompt; unselected clients load their own prompt (:404, :406), only a never-trained one the global prompt (:408).
  The global prompt (:392, sample-weighted mean, utils/fed_utils.py:5-28) is only loaded to start the next local
  training (:375). Previously the prompt was plainly shared here, so every client was evaluated with the average.
- mixture: trainers/pfedmoap.py:224-228 normalize image and text features and form s * img @ text.T; :231-234 pool
  the normalized features (:176-183, stride output_dim // gating_embed_dim, :171) and return
  lmbda * local_logits + s * bmm(pool(img), gated): a raw dot product. The non-local features are normalized
  before pooling and detached (:205-207). Previously both sides were L2-normalized again (a cosine).
- attention: trainers/pfedmoap.py:429-471; the constructor takes dropout=0.1 (:174, :430) and never applies it;
  scores = Q K^T * scaling (:447), softmax (:452), W_o of the concatenated heads (:470). Previously dropout 0.1
  was applied to the attention weights in training; the option is removed.
- first participation and round 0: federated_main.py:359-360 (round 0: the initial weights) and :362-374 ("training
  only the local prompts (no non-local) for the first time each client is selected") download no expert, so
  trainers/pfedmoap.py:230, :236-237 return the plain local logits. Round 0 samples clients like any other round
  (:348-351; train.sh:20-21 runs 10 clients with FRAC=1, so everyone). Previously every expert slot started as a
  copy of the initial prompt and a first participation drew random experts (methods.md still says so).
- too few published prompts: trainers/pfedmoap.py:327-329 (random) and :338-340 (nearest) take all other clients
  with a prompt when there are fewer than K - 1 (at most K with its own), so fewer experts. Previously the known
  ones were repeated to fill K - 1 slots, which weighs them twice in the softmax.

Where hpcfed knowingly differs from the released code:
- selection: federated_main.py:370 and :402 call sparse_selection(idx, local_prompts) without the method, so the
  default "random" (trainers/pfedmoap.py:321) runs whatever --sparse_selection says (:45, train.sh:29): the first
  K - 1 published clients in one fixed shuffled order (:296-297, :322-329). The nearest branch (:335-353) would
  fail as written (torch.topk of a Python list, positions taken for client ids). hpcfed follows the paper and
  train.sh (nearest). With train.sh's 10 clients and K = min(10, users) = 10 (federated_main.py:144) every client
  takes all 9 others either way;
- the released loop is sequential: a client's experts include prompts uploaded earlier in the same round (:387
  before the next client's :370), and `local_gatings` starts as {} but is tested with `!= []` (:365, :400), so a
  client's second participation starts its gating from the previous client's. hpcfed reads the table of the
  previous round and keeps each client's gating from its own initial value (independent of order and ranks);
- an unselected client is re-assigned experts from the newest table before its test (:402-403); here it keeps the
  experts it last trained with (the released code cannot run that branch for a client that never trained:
  load_ctx([]) at :404 raises, so it only runs with full participation, where the branch is never taken);
- one optimizer group: the reference trains the prompt with SGD lr 0.002 (cosine, warm-up; configs/trainers/
  PFEDMOAP/vit_b16.yaml:15-22) and the gating with its own SGD at lr 0.01, constant (:24-33). Here the gating's
  gradients are multiplied by `gating_lr_ratio` (0.01 / 0.002 = 5), which equals the separate learning rate for
  SGD with or without momentum up to the weight-decay term and does nothing under Adam; the prompt's cosine
  schedule is not reproduced (constant lr)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hpcfed.errors import ConfigError
from hpcfed.methods.base import METHODS
from hpcfed.methods.prompt import Prompt
from hpcfed.methods.prompt_sets import FrozenCache, embed_dim, prompt_set_features, seeded_linear
from hpcfed.options import option


class AttentionGate(nn.Module):
    """Multi-head attention from one image query to the K experts' features of every class."""

    def __init__(self, dim: int, heads: int, scaling: float, generator: torch.Generator):
        super().__init__()
        self.q, self.k, self.v, self.o = (seeded_linear(dim, dim, generator) for _ in range(4))
        self.heads, self.scaling = heads, scaling

    def forward(self, query: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """query [B, g], experts [K, C, g] -> gated text features [B, C, g]."""
        b, (k, c, g), h = len(query), experts.shape, self.heads
        q = self.q(query).view(b, h, g // h)
        keys, values = self.k(experts).view(k, c, h, g // h), self.v(experts).view(k, c, h, g // h)
        weights = torch.softmax(self.scaling * torch.einsum("bhe,kche->bchk", q, keys), dim=-1)
        return self.o(torch.einsum("bchk,kche->bche", weights, values).reshape(b, c, g))


@METHODS.register("pfedmoap")
class PFedMoAP(Prompt):
    shared = ("params.prompt",)
    evaluated_as_trained = ("params.prompt",)
    published = ("params.prompt",)
    recipe = {**Prompt.recipe, "lr": 0.002, "local_epochs": 5}
    recipe_source = ("pFedMoAP official code (prompt SGD lr 0.002 from PFEDMOAP/vit_b16.yaml, batch = #shots, "
                     "5 local epochs), methods.md 3")
    batch_is_shots = True

    @dataclass
    class Options(Prompt.Options):
        n_experts: int = option(10, ge=1, fix="use e.g. 10")  # K, the local prompt included
        gating_dim: int = option(128, ge=1, fix="use e.g. gating_dim 128 with 8 heads")
        heads: int = option(8, ge=1, fix="use e.g. 8 heads with gating_dim 128")
        scaling: float = option(10.0, gt=0, fix="keep the default")
        lam: float = 0.5  # weight of the local prompt's plain CLIP logits
        # gating lr / prompt lr (0.01 / 0.002), see the module docstring
        gating_lr_ratio: float = option(5.0, gt=0, fix="keep the default")

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.expert_text = FrozenCache()

    @classmethod
    def check_options(cls, options: dict, given: set[str]) -> None:
        super().check_options(options, given)
        if options["gating_dim"] % options["heads"]:
            raise ConfigError("method.gating_dim", f"{options['gating_dim']} must be a multiple of "
                              f"heads ({options['heads']})", "use e.g. gating_dim 128 with 8 heads")

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        o, width, d = self.options, clip.token_embedding.weight.shape[1], embed_dim(clip)
        if o.gating_dim > d:
            raise ConfigError("method.gating_dim", f"{o.gating_dim} exceeds the embedding width {d}",
                              f"use at most {d}")
        self.stride = d // o.gating_dim  # 512 -> 128: every 4th feature
        prompt = torch.randn(o.n_ctx, width, generator=generator) * o.ctx_std
        gate = AttentionGate(o.gating_dim, o.heads, o.scaling, generator)
        for p in gate.parameters():
            p.register_hook(lambda grad: grad * self.options.gating_lr_ratio)
        self.added = nn.ModuleDict({
            "params": nn.ParameterDict({
                "prompt": nn.Parameter(prompt),
                # Downloaded, fixed during local training, and kept per client by the runtime; `expert_in_use`
                # marks the filled slots (none before the client's second participation).
                "experts": nn.Parameter(prompt.expand(o.n_experts - 1, -1, -1).clone(), requires_grad=False),
                "expert_in_use": nn.Parameter(torch.zeros(o.n_experts - 1), requires_grad=False)}),
            "gate": gate,
        })
        return self.added

    @property
    def _prompt(self) -> nn.Parameter:
        return self.added["params"]["prompt"]

    @property
    def _experts(self) -> nn.Parameter:
        return self.added["params"]["experts"]

    @property
    def _in_use(self) -> nn.Parameter:
        return self.added["params"]["expert_in_use"]

    def _sub(self, features: torch.Tensor) -> torch.Tensor:
        return features[..., ::self.stride][..., :self.options.gating_dim]

    def text_features(self, clip: nn.Module, text_tokens: torch.Tensor) -> torch.Tensor:
        """[1 + m, C, d]: the client's own prompt's class features first, then those of its m downloaded experts."""
        local = prompt_set_features(clip, text_tokens, self._prompt.unsqueeze(0))
        experts = self._experts.detach()[self._in_use.detach() > 0]
        if len(experts) == 0:
            return local
        expert_text = self.expert_text.get((text_tokens, experts),
                                           lambda: prompt_set_features(clip, text_tokens, experts))
        return torch.cat([local, expert_text])

    def logits(self, clip: nn.Module, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        scale = clip.logit_scale.exp()
        image = clip.encode_image(images, normalize=True)
        local = scale * image @ text_features[0].T
        if len(text_features) == 1:
            return local  # no expert downloaded: plain CLIP logits, no lambda (trainers/pfedmoap.py:236-237)
        query = self._sub(image)
        gated = self.added["gate"](query, self._sub(text_features))
        return self.options.lam * local + scale * torch.einsum("bg,bcg->bc", query, gated)

    def upload_download_floats(self, n_shared: int) -> tuple[int, int]:
        # The download adds the K - 1 expert prompts to the global prompt (methods.md §1.3: 8,192 + 9 x 8,192).
        return n_shared, n_shared + self._experts.numel()

    @torch.no_grad()
    def before_local_training(self, client: int, published: torch.Tensor | None, known: torch.Tensor | None,
                              rng: np.random.Generator) -> None:
        chosen = self.choose_experts(client, published, known)
        self._in_use.zero_()
        self._in_use[:len(chosen)] = 1.0
        if chosen:
            self._experts[:len(chosen)] = published[chosen].view(len(chosen), *self._experts.shape[1:])

    def choose_experts(self, client: int, published: torch.Tensor | None, known: torch.Tensor | None) -> list[int]:
        """The clients whose latest prompts `client` downloads: none on its first participation; all others that
        have published when at most K have; else the K - 1 nearest to its own latest prompt."""
        slots = self.options.n_experts - 1
        if slots == 0 or known is None or not bool(known[client]):
            return []
        others = [j for j in torch.nonzero(known).flatten().tolist() if j != client]
        if len(others) <= slots:
            return others
        distance = (published[others] - published[client]).norm(dim=1)
        return [others[i] for i in torch.argsort(distance, stable=True)[:slots].tolist()]
