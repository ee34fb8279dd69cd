"""What a client rank holds: one frozen backbone with the method's parameters attached, and several
persistent virtual clients whose personal state is swapped in and out of those parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hpcfed.config import Config
from hpcfed.data.images import ImageSource
from hpcfed.errors import ConfigError
from hpcfed.methods import Method
from hpcfed.metrics import harmonic_mean
from hpcfed.models import trim_text_context
from hpcfed.rng import Stream, generator, torch_seed
from hpcfed.runtime import raise_if_stopped
from hpcfed.split import ClientSplit, Splits
from hpcfed.train.reuse import SameParameters


@dataclass
class Client:
    index: int
    split: ClientSplit
    local: dict[str, torch.Tensor]  # personal parameters, never communicated
    optimizer: torch.optim.Optimizer | None  # persistent per-client state (momentum), never shared
    data_rng: np.random.Generator  # data order; one stream per client, independent of the rank
    scaler: torch.amp.GradScaler | None = None  # fp16 autocast only: the loss scale is per-client state
    # Its own trained values of the method's `evaluated_as_trained` shared parameters; empty until it trains.
    trained_shared: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Task:
    """A classification problem: the prompts of its classes and where each dataset label lands in it."""

    tokens: torch.Tensor
    label_index: torch.Tensor  # dataset label -> class index in this task, -1 outside it


# train.precision -> (autocast dtype in training, in evaluation); None: fp32, autocast off. amp is the reference's
# fp16 autocast with a GradScaler, evaluated in full precision (methods.md §1.2).
AUTOCAST = {"fp32": (None, None), "amp": (torch.float16, None), "bf16": (torch.bfloat16, torch.bfloat16)}


def make_optimizer(params: list[torch.nn.Parameter], cfg: Config) -> torch.optim.Optimizer | None:
    t = cfg.train
    if not params:
        return None
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps,
                                weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps,
                                 weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


class ClientHost:
    def __init__(self, cfg: Config, clip: torch.nn.Module, added: torch.nn.Module, method: Method,
                 images: ImageSource, labels: np.ndarray, class_names: tuple[str, ...], tokenizer, splits: Splits,
                 my_clients: list[int], device: str):
        self.cfg, self.clip, self.method, self.images, self.device = cfg, clip, method, images, device
        self.labels = torch.as_tensor(labels)
        self.splits = splits

        def task(classes: np.ndarray) -> Task:
            index = torch.full((len(class_names),), -1, dtype=torch.long)
            index[torch.as_tensor(classes)] = torch.arange(len(classes))
            texts = method.prompt_texts([class_names[c] for c in classes], cfg.data.prompt)
            return Task(tokenizer(texts).to(device), index)

        # Base-to-novel runs train and test Local/Base on the base classes, Novel on the novel ones (§1.6a).
        base_novel = splits.base_classes is not None
        self.train_task = task(splits.base_classes if base_novel else np.arange(len(class_names)))
        self.novel_task = task(splits.novel_classes) if base_novel else None
        tasks = [t for t in (self.train_task, self.novel_task) if t is not None]
        length = trim_text_context(clip, [t.tokens for t in tasks])
        for t in tasks if length else ():
            t.tokens = t.tokens[:, :length]

        named = list(added.named_parameters())
        self.shared_params = [p for name, p in named if method.is_shared(name)]
        self.local_params = {name: p for name, p in named if not method.is_shared(name)}
        self.evaluated_as_trained = {name: p for name, p in named if method.is_evaluated_as_trained(name)}
        self.published_params = [p for name, p in named if method.is_published(name)]
        # Parameters a method adds with requires_grad=False are per-client state that is not trained.
        self.trainable = [p for _, p in named if p.requires_grad]
        self.published: torch.Tensor | None = None  # [clients, n] latest published values of every client
        self.published_known: torch.Tensor | None = None
        self.device_type = device_type = torch.device(device).type
        self.train_dtype, self.eval_dtype = AUTOCAST[cfg.train.precision]
        if cfg.train.precision == "bf16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("train.precision", f"bf16 on {torch.cuda.get_device_name()}, which has no bf16",
                              "use precision: amp (fp16 with a gradient scaler, as the reference) or fp32")
        # Shared parameters leave a GPU through pinned memory: an asynchronous DMA instead of a pageable copy.
        self.stage = torch.empty(self.n_shared, pin_memory=device_type == "cuda")
        # Every client starts from the same initial parameters (as in the reference code).
        self.global_shared = self._flat_shared().clone()
        self.initial_local = {n: p.detach().clone() for n, p in self.local_params.items()}
        # Text features and global-set scores of a model are reused while its parameters are the same (reuse.py).
        self.same_parameters = SameParameters([*added.parameters(), *added.buffers()])
        self.clients = {
            index: Client(index, splits.clients[index], {n: p.clone() for n, p in self.initial_local.items()},
                          make_optimizer(self.trainable, cfg), generator(cfg.seed, Stream.CLIENT_DATA, index),
                          torch.amp.GradScaler(device_type) if self.train_dtype == torch.float16 else None)
            for index in my_clients
        }

    def use_feature_cache(self, path: Path, cut) -> None:
        """Read features from the cache at `path` instead of pixels: the image tower runs from the cut on, and the
        text tower's frozen prefix is remembered per set of class prompts."""
        from hpcfed.extract.cache import FeatureSource
        from hpcfed.extract.prefix import CachedVisual, TextPrefixCache

        held_out = [c.split.val for c in self.clients.values()] + [c.split.test for c in self.clients.values()]
        held_out += self.splits.global_tests()
        train = [c.split.train for c in self.clients.values()]
        empty = [np.zeros(0, np.int64)]
        self.images = FeatureSource(path, np.concatenate(held_out + empty), np.concatenate(train + empty))
        self.clip.visual = CachedVisual(self.clip.visual, cut)
        self.clip.transformer = TextPrefixCache(self.clip.transformer, self.method.added)

    def autocast(self, training: bool):
        """The autocast context of train.precision for training or for evaluation (AUTOCAST)."""
        dtype = self.train_dtype if training else self.eval_dtype
        return torch.autocast(self.device_type, dtype=dtype or torch.float32, enabled=dtype is not None)

    @property
    def n_shared(self) -> int:
        return sum(p.numel() for p in self.shared_params)

    def _flat_shared(self) -> torch.Tensor:
        """The shared parameters, flat, in host memory (the staging buffer: copy before keeping it)."""
        if not self.shared_params:
            return torch.zeros(0)
        self.stage.copy_(torch.cat([p.detach().reshape(-1) for p in self.shared_params]), non_blocking=True)
        if self.device_type == "cuda":
            torch.cuda.current_stream().synchronize()
        return self.stage

    @torch.no_grad()
    def load(self, local: dict[str, torch.Tensor], trained_shared: dict[str, torch.Tensor] | None = None) -> None:
        """Put personal parameters `local` and the current global shared state into the model; with
        `trained_shared`, a client's own copies replace the global values of those shared parameters."""
        for name, p in self.local_params.items():
            p.copy_(local[name])
        offset = 0
        for p in self.shared_params:
            p.copy_(self.global_shared[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        for name, value in (trained_shared or {}).items():
            self.evaluated_as_trained[name].copy_(value)

    @torch.no_grad()
    def store(self, client: Client) -> None:
        for name, p in self.local_params.items():
            client.local[name].copy_(p)
        for name, p in self.evaluated_as_trained.items():
            client.trained_shared[name] = p.detach().clone()

    def _proximal(self, anchor: list[torch.Tensor]) -> torch.Tensor:
        # FedProx: keep the shared parameters near the global state they started the round from.
        return 0.5 * self.cfg.train.prox_mu * sum(((p - a) ** 2).sum() for p, a in zip(self.shared_params, anchor,
                                                                                          strict=True))

    def train(self, client: Client, round_index: int) -> float:
        """Local epochs of the method's objective on the client's training split; returns the mean loss."""
        if not self.trainable:
            return float("nan")  # nothing to train (zero-shot)
        # torch's global stream (dropout) seeded per client and round: independent of ranks, nothing to checkpoint.
        torch.manual_seed(torch_seed(self.cfg.seed, Stream.CLIENT_TORCH, client.index, round_index))
        self.load(client.local)
        self.method.before_local_training(client.index, self.published, self.published_known, client.data_rng)
        if self.cfg.train.reset_optimizer:
            client.optimizer = make_optimizer(self.trainable, self.cfg)
        anchor = [p.detach().clone() for p in self.shared_params] if self.cfg.train.prox_mu > 0 else None
        self.clip.train()
        train_index, losses = client.split.train, []
        n_views = self.cfg.train.augment_views  # > 0 only with train.augment (config validation)
        fresh_crops = self.cfg.train.augment and n_views == 0
        for epoch in range(self.cfg.train.local_epochs):
            order = train_index[client.data_rng.permutation(len(train_index))]
            views = client.data_rng.integers(n_views, size=len(order)) if n_views else None  # one view per epoch
            # Crops from their own stream: the data order of runs without augmentation stays what it was.
            crop_rng = generator(self.cfg.seed, Stream.CLIENT_AUGMENT, client.index, round_index, epoch) \
                if fresh_crops else None
            for start in range(0, len(order), self.cfg.train.batch_size):
                batch = order[start:start + self.cfg.train.batch_size]
                images = self._training_images(batch, crop_rng,
                                               None if views is None else views[start:start + len(batch)])
                loss = self._training_loss(batch, images)
                if anchor is not None:
                    loss = loss + self._proximal(anchor)
                self._step(client.optimizer, client.scaler, loss)
                losses.append(loss.item())
        self.clip.eval()
        self.store(client)
        return float(np.mean(losses))

    def _training_images(self, batch: np.ndarray, crop_rng: np.random.Generator | None,
                         views: np.ndarray | None) -> torch.Tensor:
        if crop_rng is not None:
            return self.images.augmented_batch(batch, crop_rng, self.device)
        return self.images.batch(batch, self.device, views)

    def _training_loss(self, batch: np.ndarray, images: torch.Tensor) -> torch.Tensor:
        labels = self.train_task.label_index[self.labels[batch]].to(self.device)
        with self.autocast(training=True):
            return self.method.training_loss(self.clip, images, labels, self.train_task.tokens)

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    def client_states(self) -> dict[int, dict]:
        """What a checkpoint keeps of each hosted client (its personal state; the rest is rebuilt from the config)."""
        return {i: {"local": c.local, "optimizer": c.optimizer.state_dict() if c.optimizer else None,
                    "data_rng": c.data_rng.bit_generator.state, "scaler": c.scaler.state_dict() if c.scaler else None,
                    "trained_shared": c.trained_shared}
                for i, c in self.clients.items()}

    def set_client_state(self, index: int, state: dict) -> None:
        client = self.clients[index]
        for name, value in state["local"].items():
            client.local[name].copy_(value)
        if client.optimizer is not None and state["optimizer"] is not None:
            client.optimizer.load_state_dict(state["optimizer"])
        client.data_rng.bit_generator.state = state["data_rng"]
        if client.scaler is not None and state.get("scaler"):
            client.scaler.load_state_dict(state["scaler"])
        # Replaced, not merged: a state without trained copies is a client that has not trained yet.
        client.trained_shared = {name: self.evaluated_as_trained[name].detach().clone().copy_(value)
                                 for name, value in state.get("trained_shared", {}).items()}

    def global_state(self) -> dict:
        return {"shared": self.global_shared, "published": self.published, "published_known": self.published_known}

    def set_global_state(self, state: dict) -> None:
        self.global_shared = state["shared"]
        self.published, self.published_known = state["published"], state["published_known"]

    def shared_contribution(self, like=None):
        """The shared parameters as trained by the client just trained, in float64 (see the round loop): numpy in
        host memory, or a tensor on the device of `like` (a device buffer for a CUDA-aware MPI)."""
        if isinstance(like, torch.Tensor):
            flat = [p.detach().reshape(-1) for p in self.shared_params]
            return torch.cat(flat).to(like.device, torch.float64) if flat else like.new_zeros(0)
        return self._flat_shared().double().numpy()

    @property
    def n_published(self) -> int:
        return sum(p.numel() for p in self.published_params)

    def published_contribution(self, client: Client) -> np.ndarray:
        """The published values of `client` as it stands (its parameters are loaded after training)."""
        return torch.cat([p.detach().reshape(-1) for p in self.published_params]).cpu().numpy()

    def set_published(self, table: np.ndarray, known: np.ndarray) -> None:
        """Keep the newest published row of every client that trained this round (known marks them)."""
        fresh = torch.from_numpy(table.astype(np.float32))
        mask = torch.from_numpy(known > 0)
        if self.published is None:
            self.published, self.published_known = torch.zeros_like(fresh), torch.zeros(len(known), dtype=torch.bool)
        self.published[mask] = fresh[mask]
        self.published_known |= mask

    @torch.no_grad()
    def _accuracy(self, index: np.ndarray, task: Task, global_set: str = "") -> tuple[float, float]:
        """(accuracy, mean loss) of the loaded parameters on `index`, classified among `task`'s classes; a
        `global_set` (the same images for every client) is scored once per distinct set of parameters."""
        if index is None or len(index) == 0:
            return float("nan"), float("nan")
        reused = self.same_parameters.values()
        if global_set:
            if global_set not in reused:
                reused[global_set] = self._score(index, task, reused)
            return reused[global_set]
        return self._score(index, task, reused)

    def _score(self, index: np.ndarray, task: Task, reused: dict) -> tuple[float, float]:
        if id(task) not in reused:
            with self.autocast(training=False):
                reused[id(task)] = self.method.text_features(self.clip, task.tokens)
        text = reused[id(task)]
        correct, loss_sum = 0, 0.0
        for start in range(0, len(index), self.cfg.train.eval_batch_size):
            raise_if_stopped()  # the zero-shot evaluation of set-up can take minutes on a large dataset
            batch = index[start:start + self.cfg.train.eval_batch_size]
            with self.autocast(training=False):
                logits = self.method.logits(self.clip, self.images.batch(batch, self.device), text).float()
            labels = task.label_index[self.labels[batch]].to(self.device)
            correct += int((logits.argmax(1) == labels).sum())
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        return correct / len(index), loss_sum / len(index)

    def evaluate(self, client: Client) -> dict[str, float]:
        """Every metric of one client (methods.md §1.7): Local = its own test split; Base and Novel = the
        global base/novel test sets; global = the shared part with untrained personal parameters. A method's
        `evaluated_as_trained` parameters are the client's own trained copies (the average until it has trained)."""
        self.load(client.local, client.trained_shared)
        out = {}
        out["val_accuracy"], out["val_loss"] = self._accuracy(client.split.val, self.train_task)
        out["test_accuracy"], out["test_loss"] = self._accuracy(client.split.test, self.train_task)
        if self.splits.unseen_domain_test is not None:  # leave-one-domain-out: the domain no client holds
            out["unseen_domain_accuracy"], _ = self._accuracy(self.splits.unseen_domain_test, self.train_task,
                                                              "unseen_domain")
        if self.novel_task is not None:
            out["base_accuracy"], _ = self._accuracy(self.splits.base_test, self.train_task, "base")
            out["novel_accuracy"], _ = self._accuracy(self.splits.novel_test, self.novel_task, "novel")
            out["hm"] = harmonic_mean(out["test_accuracy"], out["base_accuracy"], out["novel_accuracy"])
        if self.n_shared > 0:
            if self.local_params or client.trained_shared:
                self.load(self.initial_local)
                out["global_accuracy"], _ = self._accuracy(client.split.test, self.train_task)
            else:
                out["global_accuracy"] = out["test_accuracy"]  # nothing personal: the model is the global one
        return out

    def evaluate_new_client(self, client: Client, round_index: int) -> dict[str, float]:
        """A held-out client (partition.holdout_clients), which never trains: its test accuracy as a new client
        gets it (the global shared state and the method's initial personal parameters, what `evaluate` calls
        untrained), then after train.holdout_steps local steps on its own train split from a fresh optimizer.
        The adapted parameters are never stored: the client is a new client again at the next evaluation."""
        self.load(client.local)
        out = {"unseen_fresh_accuracy": self._accuracy(client.split.test, self.train_task)[0]}
        steps = self.cfg.train.holdout_steps
        if steps == 0 or not self.trainable:
            return out
        torch.manual_seed(torch_seed(self.cfg.seed, Stream.HOLDOUT_STEPS, client.index, round_index, 1))
        rng = generator(self.cfg.seed, Stream.HOLDOUT_STEPS, client.index, round_index, 0)
        # The method's own rule for a first participation (pFedMoAP: no experts), as a sampled client would meet it.
        self.method.before_local_training(client.index, self.published, self.published_known, rng)
        optimizer = make_optimizer(self.trainable, self.cfg)
        scaler = torch.amp.GradScaler(self.device_type) if self.train_dtype == torch.float16 else None
        n_views = self.cfg.train.augment_views
        crop_rng = rng if self.cfg.train.augment and n_views == 0 else None
        order = np.zeros(0, dtype=np.int64)
        self.clip.train()
        for _ in range(steps):  # batches of shuffled passes over the train split, a pass continued across steps
            if len(order) == 0:
                order = client.split.train[rng.permutation(len(client.split.train))]
            batch, order = order[:self.cfg.train.batch_size], order[self.cfg.train.batch_size:]
            views = rng.integers(n_views, size=len(batch)) if n_views else None
            self._step(optimizer, scaler, self._training_loss(batch, self._training_images(batch, crop_rng, views)))
        self.clip.eval()
        out["unseen_adapted_accuracy"], _ = self._accuracy(client.split.test, self.train_task)
        return out
