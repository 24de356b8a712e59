"""The shared core of qpart: wire format, quantizer, layer description, data and cost model."""
