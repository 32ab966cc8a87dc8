"""The live on-demand price: asked for the on-demand market only, and dated."""
from __future__ import annotations

import json

from orchestrator.cloud import pricing


class FakePricing:
    """The Pricing API's answer, shaped as AWS sends it (PriceList items are JSON strings)."""

    def __init__(self):
        self.filters = None

    def get_products(self, ServiceCode, Filters, MaxResults):
        self.filters = {f["Field"]: f["Value"] for f in Filters}
        product = {
            "product": {"attributes": {"instanceType": self.filters["instanceType"], "marketoption": "OnDemand"}},
            "serviceCode": ServiceCode,
            "terms": {"OnDemand": {"SKU.JRTCKXETXF": {
                "effectiveDate": "2025-06-01T00:00:00Z",
                "priceDimensions": {"SKU.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "pricePerUnit": {"USD": "0.7520000000"}}},
            }}},
            "publicationDate": "2025-11-20T21:04:11Z",
        }
        return {"PriceList": [json.dumps(product)]}


def test_the_live_price_asks_for_the_on_demand_market_and_says_its_date(monkeypatch):
    fake = FakePricing()
    monkeypatch.setattr(pricing, "_quick_client", lambda *_: fake)
    price = pricing.hourly_price("g4dn.2xlarge", "eu-west-1", spot=False, live=True)
    assert fake.filters["marketoption"] == "OnDemand" and fake.filters["regionCode"] == "eu-west-1"
    assert price == pricing.Price(0.752, "live: AWS Pricing API, in effect since 2025-06-01")


def test_every_type_suggested_instead_of_an_unsupported_one_has_a_table_price_cheapest_first():
    from orchestrator.cloud import catalog
    for gpus in (1, 4, 8):
        suggested = catalog.dlami_alternatives(gpus)
        prices = [pricing.table_price(name, "us-east-1") for name in suggested]
        assert all(p is not None and not p.estimate for p in prices), suggested
        assert [p.usd_per_hour for p in prices] == sorted(p.usd_per_hour for p in prices), suggested


def test_a_table_price_says_it_is_the_table_and_how_old_it_is():
    price = pricing.table_price("g4dn.2xlarge", "eu-west-1")
    assert price is not None and price.estimate
    assert price.source.startswith("table late 2025") and "eu-west-1 is usually higher" in price.source
