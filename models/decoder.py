"""The forward pass GPT and GPT-2 share: embeddings, a stack of blocks with a key/value cache,
padding-aware masks and positions, and the outputs. A family names its embeddings and builds its
blocks; GPT-2 ends with a LayerNorm, GPT does not."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import head_mask_per_layer, masks_and_positions, normalize_past, past_length
from .outputs import BaseModelOutputWithPast
from .pretrained import PreTrainedModel


class DecoderModel(PreTrainedModel):
    """Subclasses set ``token_embedding_name``/``position_embedding_name`` and build ``drop``,
    ``h`` (blocks: ``(x, mask, layer_past, use_cache, head_mask, output_attentions) -> (x,
    present, attention weights)``) and, optionally, ``ln_f``."""

    token_embedding_name = "wte"
    position_embedding_name = "wpe"

    def get_input_embeddings(self) -> nn.Embedding:
        return getattr(self, self.token_embedding_name)

    def set_input_embeddings(self, embedding: nn.Embedding) -> None:
        setattr(self, self.token_embedding_name, embedding)

    def forward(
        self,
        input_ids: Tensor | None = None,
        past=None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values=None,
    ) -> BaseModelOutputWithPast:
        """Hidden states of ``input_ids`` (``[..., T]``; extra leading dims, such as the choices of
        a multiple-choice batch, are flattened into the batch and restored on the way out).

        ``past``/``past_key_values`` is the cache a previous call returned; ``attention_mask``
        (1 = token, 0 = padding) covers past and new positions; without ``position_ids`` the
        positions count the unmasked tokens, so left padding does not shift them.
        ``token_type_ids`` are embedded with the token embedding, as in the original models.
        """
        config = self.config
        use_cache = config.use_cache if use_cache is None else use_cache
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        if past is not None and past_key_values is not None:
            raise ValueError("give the cache as past or as past_key_values, not both")
        past = normalize_past(past if past is not None else past_key_values, config.n_layer)
        tokens = self.get_input_embeddings()
        positions = getattr(self, self.position_embedding_name)

        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            shape = input_ids.shape
            check_token_ids(input_ids, tokens.num_embeddings)
            inputs_embeds = tokens(input_ids.reshape(-1, shape[-1]))  # [B, T, C]
        else:
            shape = inputs_embeds.shape[:-1]
            inputs_embeds = inputs_embeds.reshape(-1, *inputs_embeds.shape[-2:])  # [B, T, C]
        batch, length = inputs_embeds.shape[:2]
        past_len = past_length(past)
        if past_len + length > config.n_positions:
            raise ValueError(f"{past_len} past plus {length} new positions exceed n_positions={config.n_positions}")
        mask, position_ids = masks_and_positions(attention_mask, position_ids, batch, length, past_len,
                                                 inputs_embeds.device)

        x = inputs_embeds + positions(position_ids)
        if token_type_ids is not None:
            x = x + tokens(token_type_ids.reshape(-1, length))
        x = self.drop(x)  # [B, T, C]

        head_masks = head_mask_per_layer(None if head_mask is None else head_mask.to(x.dtype), config.n_layer)
        presents, hidden_states, attentions = [], [], []
        for i, block in enumerate(self.h):
            if output_hidden_states:
                hidden_states.append(x.view(*shape, -1))
            x, present, weights = block(x, mask, past[i] if past else None, use_cache, head_masks[i], output_attentions)
            presents.append(present)
            attentions.append(weights)
        if hasattr(self, "ln_f"):
            x = self.ln_f(x)
        x = x.view(*shape, -1)  # [..., T, C]
        if output_hidden_states:
            hidden_states.append(x)

        if hasattr(past, "length"):  # a preallocated cache: every layer wrote its positions
            past.length += length
            cache = past
        else:
            cache = tuple(presents)
        out = BaseModelOutputWithPast(
            last_hidden_state=x,
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
        return out.to_tuple() if return_dict is False else out


def check_token_ids(input_ids: Tensor, vocab_size: int) -> None:
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    if not input_ids.numel():
        return
    low, high = (int(v) for v in torch.aminmax(input_ids))  # one pass, one sync
    if low < 0 or high >= vocab_size:
        raise ValueError(f"input_ids must lie in [0, {vocab_size}), got values in [{low}, {high}]")
