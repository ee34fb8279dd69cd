"""FedSA-LoRA (Guo et al., "Selective Aggregation for Low-Rank Adaptation in Federated Learning", ICLR 2025,
arXiv 2410.01463): LoRA whose A factors are averaged across clients while each client keeps its own B, the
opposite of pLoRA. The paper finds that A learns what the clients have in common and B what is client specific.

Paper recipe (official code github.com/Pengxin-Guo/FedSA-LoRA, federatedscope/glue/yamls/fedsa-lora.yaml; the
paper text itself was not read): RoBERTa-large on GLUE, 3 clients, Dirichlet(0.5) label split, LoRA through
`peft` with r = 8, lora_alpha = 16 (scale alpha/r = 2), lora_dropout 0.05 on peft's default targets for RoBERTa
(query and value), `personalization.local_param: ['lora_B', 'classifier']`, FederatedScope's default optimizer
(SGD, no momentum) at lr 2e-2, batch 128, 10 local steps per round, 1000 rounds, fp16. The LLaMA-3-8B/GSM8K
config of the same code: same LoRA, lr 5e-3, batch 1, 30 local steps, 100 rounds.

Carried to CLIP: the recipe, rank, alpha and dropout are the LoRA family's (CLIP-LoRA: AdamW lr 2e-4, batch 32,
rank 2, alpha 1, dropout 0.25 on q, k, v, out of both towers, methods.md §2.3), not the RoBERTa ones, so that
fedlora, plora, fedsa_lora and ffa_lora differ only in which factor is shared (the comparison this module exists
for). SGD at lr 2e-2 and 10 steps is tuned for a classifier head on RoBERTa and has no counterpart on CLIP's
prompt-classifier; `-o method.rank=8 -o method.lora_alpha=16` gives the paper's rank and scale.
Every client starts from the same A and B (the shared init seed); the paper's classifier head has no CLIP analogue
(CLIP classifies with the text tower)."""

from hpcfed.methods.base import METHODS
from hpcfed.methods.lora import LoRA


@METHODS.register("fedsa_lora")
class FedSALoRA(LoRA):
    shared = ("*.A",)
    recipe_source = ("CLIP-LoRA recipe of the LoRA family (methods.md 2.3); FedSA-LoRA's own is for RoBERTa "
                     "(SGD lr 2e-2, r 8, alpha 16), see hpcfed/methods/fedsa_lora.py")
