"""$/hour for an instance: a live price when AWS answers quickly, else the shipped table."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Price:
    usd_per_hour: float
    source: str  # e.g. "live: AWS Pricing API", "table 2025-01-15 (us-east-1)"
    estimate: bool = False  # True when the table has no entry for this region


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(resources.files("orchestrator").joinpath("data/prices.json").read_text())


def table_price(instance_type: str, region: str) -> Price | None:
    table = _table()
    value = table["on_demand"].get(instance_type)
    if value is None:
        return None
    if region in table["regions"]:
        return Price(float(value), f"table {table['as_of']} ({region})")
    return Price(float(value), f"table {table['as_of']} (us-east-1 price; {region} is usually higher)", True)


def hourly_price(instance_type: str, region: str, spot: bool = False, live: bool = True) -> Price | None:
    """The live price when reachable (spot: the lowest current AZ price), else the table's."""
    if live:
        try:
            found = _live_spot(instance_type, region) if spot else _live_on_demand(instance_type, region)
            if found is not None:
                return found
        except Exception:  # offline, no permission, an endpoint without the API: use the table
            pass
    price = table_price(instance_type, region)
    if price is not None and spot:
        return Price(price.usd_per_hour, f"{price.source}, on-demand: spot is usually 50-70% less", True)
    return price


def _quick_client(service: str, region: str):
    import boto3
    from botocore.config import Config

    config = Config(region_name=region, connect_timeout=3, read_timeout=5,
                    retries={"mode": "standard", "max_attempts": 1})
    return boto3.session.Session().client(service, config=config)


def _live_on_demand(instance_type: str, region: str) -> Price | None:
    # The Pricing API lives in us-east-1 (and ap-south-1) only, whatever the instance's region.
    response = _quick_client("pricing", "us-east-1").get_products(
        ServiceCode="AmazonEC2",
        Filters=[
            {"Type": "TERM_MATCH", "Field": field, "Value": value}
            for field, value in (("instanceType", instance_type), ("regionCode", region),
                                 ("operatingSystem", "Linux"), ("tenancy", "Shared"),
                                 ("preInstalledSw", "NA"), ("capacitystatus", "Used"),
                                 # Without it, a Capacity Block product can answer first.
                                 ("marketoption", "OnDemand"))
        ],
        MaxResults=1,
    )
    for item in response.get("PriceList", []):
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD", 0))
                if usd > 0:
                    since = str(term.get("effectiveDate") or product.get("publicationDate") or "")[:10]
                    return Price(usd, f"live: AWS Pricing API{f', in effect since {since}' if since else ''}")
    return None


def _live_spot(instance_type: str, region: str) -> Price | None:
    history = _quick_client("ec2", region).describe_spot_price_history(
        InstanceTypes=[instance_type], ProductDescriptions=["Linux/UNIX"],
        StartTime=datetime.now(timezone.utc), MaxResults=20,
    )["SpotPriceHistory"]
    prices = [float(h["SpotPrice"]) for h in history]
    return Price(min(prices), "live: current spot price (lowest AZ)") if prices else None
