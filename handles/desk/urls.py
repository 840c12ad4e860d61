from django.urls import path

from handles.desk import views

app_name = "desk"

urlpatterns = [
    path("", views.browse, name="browse"),
    path("export.csv", views.export, name="export"),
    path("<int:pk>/", views.detail, name="detail"),
]
