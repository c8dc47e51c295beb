//! The sandbox menu: four stores (one closed, one whose POS is offline) and 24 products,
//! most with modifier groups.

use super::wire::{ModifierGroup, ModifierOption, Product, Store, WireMoney};

/// Every sandbox store's currency.
pub const CURRENCY: &str = "USD";
/// The store whose Epoint POS refuses every injection (API.md's sandbox conventions).
pub const POS_OFFLINE_STORE: &str = "str_burbank";
/// The store that is closed, to exercise `store_closed`.
pub const CLOSED_STORE: &str = "str_sunset";

fn usd(amount: i64) -> WireMoney {
    WireMoney {
        amount,
        currency: CURRENCY.to_owned(),
    }
}

fn option(id: &str, name: &str, delta: i64) -> ModifierOption {
    ModifierOption {
        id: id.to_owned(),
        name: name.to_owned(),
        price_delta: usd(delta),
        available: true,
    }
}

fn group(id: &str, name: &str, min: u32, max: u32, options: Vec<ModifierOption>) -> ModifierGroup {
    ModifierGroup {
        id: id.to_owned(),
        name: name.to_owned(),
        min_selections: min,
        max_selections: max,
        options,
    }
}

fn size() -> ModifierGroup {
    group(
        "grp_size",
        "Size",
        1,
        1,
        vec![
            option("opt_size_small", "Small (12 oz)", 0),
            option("opt_size_regular", "Regular (16 oz)", 50),
            option("opt_size_large", "Large (20 oz)", 100),
        ],
    )
}

fn milk() -> ModifierGroup {
    let mut soy = option("opt_milk_soy", "Soy milk", 70);
    // One sold-out option, so clients can show it greyed out.
    soy.available = false;
    group(
        "grp_milk",
        "Milk",
        0,
        1,
        vec![
            option("opt_milk_whole", "Whole milk", 0),
            option("opt_milk_nonfat", "Nonfat milk", 0),
            option("opt_milk_oat", "Oat milk", 80),
            option("opt_milk_almond", "Almond milk", 80),
            soy,
        ],
    )
}

fn shots() -> ModifierGroup {
    group(
        "grp_shots",
        "Extra shots",
        0,
        3,
        vec![
            option("opt_shot_espresso", "Extra espresso shot", 90),
            option("opt_shot_decaf", "Extra decaf shot", 90),
            option("opt_shot_ristretto", "Extra ristretto shot", 90),
        ],
    )
}

fn syrups() -> ModifierGroup {
    group(
        "grp_syrup",
        "Syrups",
        0,
        2,
        vec![
            option("opt_syrup_vanilla", "Vanilla", 60),
            option("opt_syrup_caramel", "Caramel", 60),
            option("opt_syrup_hazelnut", "Hazelnut", 60),
        ],
    )
}

fn warm() -> ModifierGroup {
    group(
        "grp_warm",
        "Preparation",
        0,
        1,
        vec![option("opt_warmed", "Warmed", 0)],
    )
}

struct Item {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    category: &'static str,
    price: i64,
    groups: fn() -> Vec<ModifierGroup>,
}

fn espresso_drink() -> Vec<ModifierGroup> {
    vec![size(), milk(), shots(), syrups()]
}
fn black_drink() -> Vec<ModifierGroup> {
    vec![size(), shots(), syrups()]
}
fn tea_drink() -> Vec<ModifierGroup> {
    vec![size(), milk(), syrups()]
}
fn blended() -> Vec<ModifierGroup> {
    vec![size(), milk(), syrups()]
}
fn bakery() -> Vec<ModifierGroup> {
    vec![warm()]
}
fn plain() -> Vec<ModifierGroup> {
    Vec::new()
}

const ITEMS: &[Item] = &[
    Item {
        id: "prd_latte",
        name: "Caffè Latte",
        description: "Espresso with steamed milk and a thin layer of foam.",
        category: "Espresso",
        price: 495,
        groups: espresso_drink,
    },
    Item {
        id: "prd_cappuccino",
        name: "Cappuccino",
        description: "Espresso under a deep cap of milk foam.",
        category: "Espresso",
        price: 475,
        groups: espresso_drink,
    },
    Item {
        id: "prd_americano",
        name: "Caffè Americano",
        description: "Espresso lengthened with hot water.",
        category: "Espresso",
        price: 375,
        groups: black_drink,
    },
    Item {
        id: "prd_espresso",
        name: "Espresso",
        description: "A double shot of our espresso roast.",
        category: "Espresso",
        price: 325,
        groups: || vec![shots()],
    },
    Item {
        id: "prd_mocha",
        name: "Caffè Mocha",
        description: "Espresso, chocolate powder and steamed milk.",
        category: "Espresso",
        price: 545,
        groups: espresso_drink,
    },
    Item {
        id: "prd_flat_white",
        name: "Flat White",
        description: "Ristretto shots with velvety microfoam.",
        category: "Espresso",
        price: 525,
        groups: espresso_drink,
    },
    Item {
        id: "prd_cortado",
        name: "Cortado",
        description: "Espresso cut with an equal part of warm milk.",
        category: "Espresso",
        price: 425,
        groups: || vec![milk(), shots()],
    },
    Item {
        id: "prd_drip",
        name: "Brewed Coffee",
        description: "Our coffee of the day.",
        category: "Coffee",
        price: 295,
        groups: || vec![size(), milk()],
    },
    Item {
        id: "prd_cold_brew",
        name: "Cold Brew",
        description: "Steeped cold for twenty hours.",
        category: "Coffee",
        price: 445,
        groups: black_drink,
    },
    Item {
        id: "prd_vanilla_ice_blended",
        name: "Vanilla Ice Blended®",
        description: "Our signature blended vanilla drink.",
        category: "Ice Blended",
        price: 575,
        groups: blended,
    },
    Item {
        id: "prd_mocha_ice_blended",
        name: "Mocha Ice Blended®",
        description: "Coffee, chocolate and ice, blended.",
        category: "Ice Blended",
        price: 595,
        groups: blended,
    },
    Item {
        id: "prd_matcha_latte",
        name: "Matcha Green Tea Latte",
        description: "Stone-ground matcha with steamed milk.",
        category: "Tea",
        price: 525,
        groups: tea_drink,
    },
    Item {
        id: "prd_chai_latte",
        name: "Chai Tea Latte",
        description: "Spiced black tea with steamed milk.",
        category: "Tea",
        price: 495,
        groups: tea_drink,
    },
    Item {
        id: "prd_earl_grey",
        name: "Earl Grey Tea",
        description: "Black tea scented with bergamot.",
        category: "Tea",
        price: 325,
        groups: || vec![size(), milk()],
    },
    Item {
        id: "prd_jasmine",
        name: "Jasmine Dragon Phoenix Pearl",
        description: "Hand-rolled jasmine green tea.",
        category: "Tea",
        price: 395,
        groups: || vec![size()],
    },
    Item {
        id: "prd_iced_tea",
        name: "Iced Tea",
        description: "Freshly brewed and chilled.",
        category: "Tea",
        price: 325,
        groups: || vec![size(), syrups()],
    },
    Item {
        id: "prd_hot_chocolate",
        name: "Hot Chocolate",
        description: "Chocolate powder and steamed milk.",
        category: "Other",
        price: 425,
        groups: tea_drink,
    },
    Item {
        id: "prd_croissant",
        name: "Butter Croissant",
        description: "Flaky, all butter.",
        category: "Bakery",
        price: 350,
        groups: bakery,
    },
    Item {
        id: "prd_almond_croissant",
        name: "Almond Croissant",
        description: "Filled with almond cream.",
        category: "Bakery",
        price: 425,
        groups: bakery,
    },
    Item {
        id: "prd_blueberry_muffin",
        name: "Blueberry Muffin",
        description: "Packed with blueberries.",
        category: "Bakery",
        price: 375,
        groups: bakery,
    },
    Item {
        id: "prd_banana_bread",
        name: "Banana Bread",
        description: "A thick slice, baked daily.",
        category: "Bakery",
        price: 350,
        groups: bakery,
    },
    Item {
        id: "prd_avocado_toast",
        name: "Avocado Toast",
        description: "Sourdough, smashed avocado, chilli flakes.",
        category: "Food",
        price: 825,
        groups: plain,
    },
    Item {
        id: "prd_egg_sandwich",
        name: "Egg & Cheese Sandwich",
        description: "On a toasted brioche bun.",
        category: "Food",
        price: 695,
        groups: bakery,
    },
    Item {
        id: "prd_water",
        name: "Bottled Water",
        description: "Still, 500 ml.",
        category: "Other",
        price: 225,
        groups: plain,
    },
];

/// Sold out everywhere in the sandbox, to exercise `product_unavailable`.
pub const SOLD_OUT_PRODUCT: &str = "prd_banana_bread";

/// The 24 sandbox products, in menu order.
pub fn products() -> Vec<Product> {
    ITEMS
        .iter()
        .map(|item| Product {
            id: item.id.to_owned(),
            name: item.name.to_owned(),
            description: item.description.to_owned(),
            category: item.category.to_owned(),
            price: usd(item.price),
            available: item.id != SOLD_OUT_PRODUCT,
            modifier_groups: (item.groups)(),
        })
        .collect()
}

/// The sandbox stores' ids, in the order [`stores`] lists them.
pub fn store_ids() -> Vec<String> {
    stores().into_iter().map(|s| s.id).collect()
}

/// The four sandbox stores, in catalogue order.
pub fn stores() -> Vec<Store> {
    let all: Vec<String> = ITEMS.iter().map(|i| i.id.to_owned()).collect();
    let without_food: Vec<String> = ITEMS
        .iter()
        .filter(|i| i.category != "Food")
        .map(|i| i.id.to_owned())
        .collect();
    let store = |id: &str, name: &str, address: &str, is_open: bool, menu: &Vec<String>| Store {
        id: id.to_owned(),
        name: name.to_owned(),
        address: address.to_owned(),
        is_open,
        currency: CURRENCY.to_owned(),
        tax_rate_bps: 1025,
        product_ids: menu.clone(),
    };
    vec![
        store(
            "str_pasadena",
            "CBTL Pasadena Colorado Blvd",
            "35 E Colorado Blvd, Pasadena, CA 91105",
            true,
            &all,
        ),
        store(
            "str_santa_monica",
            "CBTL Santa Monica Main St",
            "2700 Main St, Santa Monica, CA 90405",
            true,
            &without_food,
        ),
        store(
            CLOSED_STORE,
            "CBTL Sunset Blvd",
            "8591 Sunset Blvd, West Hollywood, CA 90069",
            false,
            &all,
        ),
        store(
            POS_OFFLINE_STORE,
            "CBTL Burbank (POS offline)",
            "201 N San Fernando Blvd, Burbank, CA 91502",
            true,
            &all,
        ),
    ]
}
