"""No views: the example is about tasks."""

urlpatterns: list[object] = []
