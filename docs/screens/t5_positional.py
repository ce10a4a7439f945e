"""Issue 31's T5 case in a form main's harness can run too (positional inputs): the encoder and decoder blocks
gathered into a `.layers` the forward never calls.  Loads harness/rows/real_models.py of branch `user` by path."""
import importlib.util

import torch.nn as nn

_spec = importlib.util.spec_from_file_location("rm", "/work/wt/user/harness/rows/real_models.py")
rm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rm)


class Positional(nn.Module):
    def __init__(self, gathered):
        super().__init__()
        self.inner = gathered.inner
        self.layers = gathered.layers

    def forward(self, input_ids, decoder_input_ids):
        return self.inner(input_ids=input_ids, decoder_input_ids=decoder_input_ids).logits


def build():
    model, inputs = rm.hf_t5_gathered_layers()
    return Positional(model), (inputs["input_ids"], inputs["decoder_input_ids"])
