"""The routing layer: route models compiled once, and the faust app that applies them."""
