use crate::compiler::instructions::Instruction;
use crate::error::{Error, ErrorKind};
use crate::value::{Value, ValueKind};
use crate::vm::context::Stack;

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

/// Helper for tracking fuel consumption
pub struct FuelTracker {
    // The initial fuel level.
    initial: u64,
    // This should be an AtomicI64 but sadly 32bit targets do not necessarily have
    // AtomicI64 available.
    remaining: AtomicIsize,
}

impl FuelTracker {
    /// Creates a new fuel tracker.
    ///
    /// The fuel tracker is always wrapped in an `Arc` so that it can be
    /// shared across nested invocations of the template evaluation.
    pub fn new(fuel: u64) -> Arc<FuelTracker> {
        Arc::new(FuelTracker {
            initial: fuel,
            remaining: AtomicIsize::new(fuel as isize),
        })
    }

    /// Tracks an instruction.  If it runs out of fuel an error is returned.
    pub fn track(&self, instr: &Instruction) -> Result<(), Error> {
        let fuel_to_consume = fuel_for_instruction(instr);
        if fuel_to_consume != 0 {
            let old_fuel = self.remaining.fetch_sub(fuel_to_consume, Ordering::Relaxed);
            if old_fuel - fuel_to_consume <= 0 {
                return Err(Error::from(ErrorKind::OutOfFuel));
            }
        }
        Ok(())
    }

    /// Tracks `bytes` made or written: one unit of fuel per [`BYTES_PER_FUEL`].
    ///
    /// (Captioner's patch: instructions alone do not bound the work, since one
    /// instruction can double a string.)
    pub fn track_bytes(&self, bytes: usize) -> Result<(), Error> {
        let fuel_to_consume = (bytes / BYTES_PER_FUEL).min(isize::MAX as usize) as isize;
        if fuel_to_consume != 0 {
            let old_fuel = self.remaining.fetch_sub(fuel_to_consume, Ordering::Relaxed);
            if old_fuel.saturating_sub(fuel_to_consume) <= 0 {
                return Err(Error::new(
                    ErrorKind::OutOfFuel,
                    "the template made more data than its fuel allows",
                ));
            }
        }
        Ok(())
    }

    /// Tracks a value just made by its deep size ([`value_bytes`]), walking no
    /// further than the remaining fuel pays for.
    pub fn track_value(&self, value: &Value) -> Result<(), Error> {
        let limit = self.remaining().saturating_mul(BYTES_PER_FUEL as u64);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.track_bytes(value_bytes(value, limit))
    }

    /// Returns the remaining fuel.
    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Relaxed) as _
    }

    /// Returns the consumed fuel.
    pub fn consumed(&self) -> u64 {
        self.initial.saturating_sub(self.remaining())
    }
}

/// Pays for a repetition on top of the stack (`"ab" * n`, `[x] * n`, either
/// way round) before it is made: its operand's size `n` times.
pub(crate) fn track_repetition(tracker: &FuelTracker, stack: &Stack) -> Result<(), Error> {
    let Some((a, b)) = stack.top_two() else {
        return Ok(());
    };
    for (repeated, times) in [(a, b), (b, a)] {
        let repeatable = matches!(
            repeated.kind(),
            ValueKind::String | ValueKind::Bytes | ValueKind::Seq | ValueKind::Iterable
        );
        if let (true, Ok(times)) = (repeatable, usize::try_from(times.clone())) {
            let limit = tracker.remaining().saturating_mul(BYTES_PER_FUEL as u64);
            let each = value_bytes(repeated, usize::try_from(limit).unwrap_or(usize::MAX));
            return tracker.track_bytes(each.saturating_mul(times));
        }
    }
    Ok(())
}

/// Does the instruction leave a value it made on the stack?  (Loads of
/// variables cost nothing more than the instruction.)
pub fn makes_value(instruction: &Instruction) -> bool {
    match instruction {
        // A constant may be one the compiler folded (`[1] * 10**8`, lazily).
        Instruction::LoadConst(_)
        | Instruction::Add
        | Instruction::Mul
        | Instruction::Rem
        | Instruction::StringConcat
        | Instruction::BuildList(_)
        | Instruction::BuildMap(_)
        | Instruction::EndCapture
        | Instruction::ApplyFilter(..)
        | Instruction::CallFunction(..)
        | Instruction::CallMethod(..)
        | Instruction::CallObject(..)
        | Instruction::BuildKwargs(_)
        | Instruction::MergeKwargs(_) => true,
        _ => false,
    }
}

/// How much fuel does an instruction consume?
fn fuel_for_instruction(instruction: &Instruction) -> isize {
    match instruction {
        Instruction::BeginCapture(_)
        | Instruction::PushLoop(_)
        | Instruction::PushDidNotIterate
        | Instruction::PushWith
        | Instruction::PopFrame
        | Instruction::PopLoopFrame
        | Instruction::DupTop
        | Instruction::DiscardTop
        | Instruction::PushAutoEscape
        | Instruction::PopAutoEscape => 0,
        #[cfg(feature = "multi_template")]
        Instruction::ExportLocals => 0,
        #[cfg(feature = "macros")]
        Instruction::LoadBlocks | Instruction::BuildMacro(..) | Instruction::Return => 0,
        _ => 1,
    }
}

/// How many bytes a value made or written costs one unit of fuel.
pub const BYTES_PER_FUEL: usize = 16;

/// What a value holds, in bytes: its strings' lengths, and a value's size for
/// every item of a sequence or map, counted through nested (and shared)
/// values, so that a list holding itself twice, nested forty deep, costs what
/// printing it would.  Stops counting once past `limit`, so the walk is never
/// longer than what the caller can pay for.
pub fn value_bytes(value: &Value, limit: usize) -> usize {
    const ITEM: usize = std::mem::size_of::<Value>();
    let mut total = ITEM;
    // Iterative: a value nested a thousand deep must not take the native stack.
    let mut pending = vec![value.clone()];
    while let Some(value) = pending.pop() {
        if total > limit {
            break;
        }
        match value.kind() {
            ValueKind::String => total = total.saturating_add(value.as_str().map_or(0, str::len)),
            ValueKind::Bytes => total = total.saturating_add(value.as_bytes().map_or(0, <[u8]>::len)),
            kind @ (ValueKind::Seq | ValueKind::Map | ValueKind::Iterable) => {
                let Some(obj) = value.as_object() else {
                    continue;
                };
                let per_item = if kind == ValueKind::Map { 2 * ITEM } else { ITEM };
                // A sized object is paid for at once, so one that is lazy (a
                // concatenation, a range) is never walked past the limit.
                let sized = obj.enumerator_len();
                if let Some(len) = sized {
                    total = total.saturating_add(len.saturating_mul(per_item));
                }
                let Some(iter) = obj.try_iter() else {
                    continue;
                };
                for item in iter {
                    if total > limit {
                        break;
                    }
                    if sized.is_none() {
                        total = total.saturating_add(per_item);
                    }
                    if kind == ValueKind::Map {
                        if let Some(v) = obj.get_value(&item) {
                            pending.push(v);
                        }
                    }
                    pending.push(item);
                }
            }
            _ => {}
        }
    }
    total
}
