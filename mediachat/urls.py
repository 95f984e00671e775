from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from personalization.views import content_page

from . import views
from .admin import dashboard_view

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("c/<slug:slug>/", content_page, name="content-page"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("api/health/", views.health, name="health"),
    path("api/", include("mediachat.api_urls")),
]

handler404 = "mediachat.apis.api_page_not_found"
