"""The offline assistant's dialogue rules: a deterministic stand-in for a model, no network.

- :mod:`.text`: what one message names (ids, addresses, amounts, free text), in linear time.
- :mod:`.toolbox`: the turn's tools, found by capability tag, and how the assistant describes itself.
- :mod:`.exchange`: the request being filled and the answers so far, read back from the history.
- :mod:`.intents`: the requests it understands and what each does.
- :mod:`.dialogue`: choosing the intent for a message and answering from tool results.

The provider adapter that streams its answers is :mod:`msev15.agent.providers.offline`.
"""
