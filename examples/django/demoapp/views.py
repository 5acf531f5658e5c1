# The example has no views.
