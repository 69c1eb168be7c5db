//! Routing generic Burn code to these kernels: a value of a type parameter is moved into the
//! concrete type it turns out to be (the backend is a type parameter; the kernels exist for
//! burn-flex only). This crate itself still depends on no Burn crate.

use std::any::Any;

/// `value` as type `T` when `S` and `T` are the same type, otherwise `value` back unchanged.
pub fn same_type<S: 'static, T: 'static>(value: S) -> Result<T, S> {
    let boxed: Box<dyn Any> = Box::new(value);
    match boxed.downcast::<T>() {
        Ok(t) => Ok(*t),
        Err(original) => Err(*original
            .downcast::<S>()
            .expect("a failed downcast returns the original value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_only_between_equal_types() {
        assert_eq!(same_type::<u32, u32>(7), Ok(7));
        assert_eq!(same_type::<u32, i32>(7), Err(7));
    }
}
