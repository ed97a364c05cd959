//! The four departments of the revenue chain.

use serde::{Deserialize, Serialize};

/// A department: who sent a lead back, who owns a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Department {
    Marketing,
    InsideSales,
    FieldSales,
    CustomerSuccess,
}

impl Department {
    pub const ALL: [Department; 4] =
        [Department::Marketing, Department::InsideSales, Department::FieldSales, Department::CustomerSuccess];

    /// The stored code, e.g. `inside_sales`.
    pub fn code(self) -> &'static str {
        match self {
            Department::Marketing => "marketing",
            Department::InsideSales => "inside_sales",
            Department::FieldSales => "field_sales",
            Department::CustomerSuccess => "customer_success",
        }
    }

    pub fn from_code(code: &str) -> Option<Department> {
        Department::ALL.into_iter().find(|d| d.code() == code)
    }
}
