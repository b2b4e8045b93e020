"""`PLMCache`: the decoding cache `generate()` uses, a `DynamicCache` without the per-step copies."""

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class PLMCacheLayer(DynamicLayer):
    """A `DynamicLayer` that writes new keys and values into spare capacity instead of concatenating: decoding
    copies each token once, not the whole cache at every step. `keys`/`values` are views of the filled part, so
    everything else (cropping, beam reordering, batch selection) works as in `DynamicLayer`: when another method
    replaces them, the next update starts a new buffer from them."""

    min_capacity = 256

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.key_buffer = self.value_buffer = None
        new = key_states.shape[-2]
        length = self.get_seq_length()
        buffer_is_current = (
            self.key_buffer is not None
            and self.keys.data_ptr() == self.key_buffer.data_ptr()
            and self.keys.shape[:2] == self.key_buffer.shape[:2]
        )
        if not buffer_is_current or length + new > self.key_buffer.shape[-2]:
            capacity = max(self.min_capacity, 2 * (length + new))
            batch, heads, _, head_dim = key_states.shape
            self.key_buffer = key_states.new_empty(batch, heads, capacity, head_dim)
            self.value_buffer = value_states.new_empty(batch, heads, capacity, head_dim)
            if length:
                self.key_buffer[:, :, :length] = self.keys
                self.value_buffer[:, :, :length] = self.values
        self.key_buffer[:, :, length : length + new] = key_states
        self.value_buffer[:, :, length : length + new] = value_states
        self.keys = self.key_buffer[:, :, : length + new]
        self.values = self.value_buffer[:, :, : length + new]
        return self.keys, self.values

    def reset(self) -> None:
        self.key_buffer = self.value_buffer = None
        super().reset()


class PLMCache(DynamicCache):
    """A `DynamicCache` made of `PLMCacheLayer`s."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.layers = [PLMCacheLayer() for _ in range(num_layers)]
