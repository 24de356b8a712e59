"""The qpart device agent: plans, fetches and caches heads, runs them and streams activations.

Imports only qpart.common and the generated contract: no server, training or planner code.
"""
