"""The type of a neuron: (layer, index) of one FFN intermediate unit. A leaf module: it imports nothing."""
Neuron = tuple[int, int]
