"""What the recipes share: running the hub beside local stand-ins for the SaaS systems.

A recipe's ``run.py`` starts its stand-ins, starts ``bus run -c <recipe>/bus.yaml`` as a child
process (the way an operator runs it), plays a scenario and checks what arrived where. The same
``run()`` is the recipe's one command and its end-to-end test (tests/e2e/test_recipes.py).
"""
