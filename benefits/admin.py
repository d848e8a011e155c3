from django.contrib import admin

from benefits.models import Benefit


@admin.register(Benefit)
class BenefitAdmin(admin.ModelAdmin):
    list_display = ["name", "kind"]
    list_filter = ["kind", "tiers"]
    filter_horizontal = ["tiers"]
    search_fields = ["name"]
