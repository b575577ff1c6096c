"""Prototypical Networks (Snell et al., 2017): no inner loop; queries scored by distance to the support prototypes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metabench import OuterBatch, Param, TaskBatch, parameters
from metabench.interfaces import Params, Strategy, TaskType
from metabench.plugins.learners.diagnostics import task_diagnostics
from metabench.plugins.learners.execution import VECTORIZE, CompiledTasks, Vectorize, map_tasks, use_vmap
from metabench.plugins.learners.losses import soft_cross_entropy
from metabench.plugins.learners.network import Network, detached, initial_backbone_params
from metabench.plugins.learners.outer_objective import OuterObjective


def prototype_logits(embeddings: Tensor, support_embeddings: Tensor, support_t: Tensor) -> Tensor:
    """Negative squared Euclidean distances ``[B, n_way]`` to the class means of the support embeddings."""
    prototypes = (support_t.T @ support_embeddings) / support_t.sum(0)[:, None]
    return -(embeddings[:, None, :] - prototypes[None]).square().sum(-1)


@parameters(
    Param(
        "lookahead_lr",
        float,
        0.1,
        "step size of the one-step lookahead that learned-λ strategies (metamixup) score their plan with",
        low=0.0,
    ),
    Param(
        "embed_episode",
        str,
        "joint",
        "'joint': support and outer batch go through the embedding network as one batch (shared batch-norm "
        "statistics), as in Snell et al.'s code and learn2learn; with a strategy mixing at layer l the two are joined "
        "at l; 'separate': each set embedded as its own batch",
        choices=("joint", "separate"),
    ),
    VECTORIZE,
)
class ProtoNet:
    """The embedding is the backbone's representation layer (``n_layers − 1``); the head is unused.

    With an outer-loop strategy, mixing happens inside the embedding network under the meta-parameters: the outer
    batch continues to the embedding layer and is scored against the support prototypes with soft labels.
    Evaluation has no adaptation, so ``pre`` equals ``post``.
    """

    meta_trains = True

    def __init__(self, *, lookahead_lr: float, embed_episode: str, vectorize: Vectorize):
        self.lookahead_lr = lookahead_lr
        self.joint = embed_episode == "joint"
        self.vectorize = vectorize
        self._network: Network | None = None
        self._compiled: CompiledTasks | None = None

    def init_params(self, backbone: nn.Module, generator: torch.Generator) -> Params:
        self._network = Network(backbone)
        params = initial_backbone_params(backbone, generator)
        return {name: value.detach().requires_grad_() for name, value in params.items()}

    @property
    def network(self) -> Network:
        if self._network is None:
            raise RuntimeError("ProtoNet: call init_params(backbone, generator) first")
        return self._network

    def incompatible(self, strategy: Strategy, strategy_name: str, task_type: TaskType) -> str | None:
        if task_type != "classification":
            return "Prototypical Networks score queries by distance to class prototypes: they need classification tasks"
        return None

    def compile_meta_gradient(self, name: str) -> None:
        """As :meth:`GradientLearner.compile_meta_gradient`: the per-task loop runs under ``torch.compile``."""
        self._compiled = CompiledTasks(name)

    def embed(self, params: Params, h: Tensor, start: int = 0) -> Tensor:
        return self.network(params, h, start, self.network.representation_layer).flatten(1)

    def embed_episode(self, params: Params, support_x: Tensor, h: Tensor, layer: int = 0) -> tuple[Tensor, Tensor]:
        """Embeddings of the support set and of ``h`` (a batch at mixable layer ``layer``): one batch from ``layer``
        on when ``embed_episode`` is joint (the support first encoded up to ``layer``), else two."""
        if not self.joint:
            return self.embed(params, support_x), self.embed(params, h, layer)
        support_h = self.network(params, support_x, 0, layer) if layer > 0 else support_x
        embeddings = self.embed(params, torch.cat([support_h, h]), layer)
        return embeddings[: len(support_x)], embeddings[len(support_x) :]

    def predict(self, params: Params, outer: OuterBatch, support_x: Tensor, support_t: Tensor) -> Tensor:
        support, embeddings = self.embed_episode(params, support_x, outer.h, outer.layer)
        return prototype_logits(embeddings, support, support_t)

    def meta_loss(
        self, params: Params, tasks: TaskBatch, strategy: Strategy, rng: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        vmap = use_vmap(self.vectorize, tasks.device, self.network)
        objective = OuterObjective(
            self.network, strategy, soft_cross_entropy, self.predict, self.lookahead_lr, vmap, self._compiled
        )
        # The lookahead of learned-λ strategies steps every parameter: ProtoNets' "fast weights" are the meta-weights.
        loss = objective.meta_loss(params, lambda shared, support: shared, tasks, rng)
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def evaluate(self, params: Params, tasks: TaskBatch) -> dict[str, Tensor]:

        def one_task(shared: Params, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
            support_x, support_t, query_x, query_t = batch
            support, query = self.embed_episode(shared, support_x, query_x)
            query_hits = prototype_logits(query, support, support_t).argmax(-1) == query_t.argmax(-1)
            support_hits = prototype_logits(support, support, support_t).argmax(-1) == support_t.argmax(-1)
            query_accuracy, support_accuracy = (
                query_hits.to(support.dtype).mean(),
                support_hits.to(support.dtype).mean(),
            )
            return {
                "pre": query_accuracy,
                "post": query_accuracy,
                "train_pre": support_accuracy,
                "train_post": support_accuracy,
            }

        batch = (tasks.support_x, tasks.soft_targets(tasks.support_y), tasks.query_x, tasks.soft_targets(tasks.query_y))
        return map_tasks(one_task, detached(params), batch, use_vmap(self.vectorize, tasks.device, self.network))

    def diagnostics(self, params: Params, tasks: TaskBatch) -> dict[str, float]:
        """Gradient norms of the prototype loss of the support set and of the query set (w.r.t. the embedding
        network), and the top singular value per class of the support embeddings; averaged over tasks."""
        support_t, query_t = tasks.soft_targets(tasks.support_y), tasks.soft_targets(tasks.query_y)

        def probe(init: Params, i: int) -> tuple[Tensor, Tensor, Tensor | None]:
            support, query = self.embed_episode(init, tasks.support_x[i], tasks.query_x[i])
            support_loss = soft_cross_entropy(prototype_logits(support, support, support_t[i]), support_t[i])
            query_loss = soft_cross_entropy(prototype_logits(query, support, support_t[i]), query_t[i])
            return support_loss, query_loss, support

        return task_diagnostics(params, self.network.names, tasks, probe)
