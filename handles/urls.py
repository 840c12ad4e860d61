from django.urls import path

from handles import views

app_name = "handles"

urlpatterns = [
    path("tombstone/<str:prefix>/<path:suffix>", views.tombstone, name="tombstone"),
    path("handles/<str:prefix>/<path:suffix>", views.resolve, name="resolve"),
]
