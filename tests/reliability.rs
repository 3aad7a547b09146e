//! Issue 9's misuse cases that are not about one subsystem: every op
//! through `ops::apply` (TensorFlow's raw ops) with the wrong number of
//! inputs is a typed error naming the op, never a panic.

mod common;
use common::*;
use wgflow::ops::conv::{Conv2d, Padding};
use wgflow::ops::pool::Pool2d;
use wgflow::ops::reduce::ReduceOp;
use wgflow::ops::unary::UnaryOp;
use wgflow::ops::{self, Op};
use wgflow::{DType, Device, Error};

fn every_op() -> Vec<Op> {
    let conv = Conv2d {
        strides: [1, 1],
        padding: Padding::Same,
        dilations: [1, 1],
        groups: 1,
    };
    let pool = Pool2d {
        max: true,
        ksize: [2, 2],
        strides: [2, 2],
        padding: Padding::Valid,
    };
    vec![
        Op::Unary(UnaryOp::Exp),
        Op::UnaryGrad(UnaryOp::Tanh),
        Op::Binary(ops::binary::BinaryOp::Add),
        Op::Compare(ops::binary::CmpOp::Less),
        Op::Where,
        Op::Cast(DType::I32),
        Op::Reshape(vec![4]),
        Op::Permute(vec![1, 0]),
        Op::BroadcastTo(vec![2, 2]),
        Op::Slice {
            begin: vec![0, 0],
            size: vec![1, 1],
        },
        Op::Concat { axis: 0 },
        Op::Gather { axis: 0 },
        Op::MatMul { ta: false, tb: false },
        Op::Conv2d(conv.clone()),
        Op::Conv2dInputGrad(conv.clone(), vec![1, 2, 2, 1]),
        Op::Conv2dFilterGrad(conv, vec![1, 1, 1, 1]),
        Op::Pool(pool.clone()),
        Op::PoolGrad(pool),
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![0],
            keepdims: false,
        },
        Op::ArgReduce { max: true, axis: 0 },
        Op::Softmax { axis: 0, log: false },
        Op::SparseXent,
        Op::SparseXentGrad,
        Op::StopGradient,
    ]
}

#[test]
fn raw_ops_with_the_wrong_number_of_inputs_are_typed_errors() {
    let mut devices = vec![Device::Cpu];
    devices.extend(gpus());
    for d in devices {
        let t = ops::ones(&[2, 2], DType::F32, &d).unwrap();
        for op in every_op() {
            let ok = op.arity();
            for n in [0usize, 1, 2, 3, 4, 7] {
                if ok.contains(&n) {
                    continue;
                }
                let inputs: Vec<&wgflow::Tensor> = std::iter::repeat_n(&t, n).collect();
                match ops::apply(op.clone(), &inputs) {
                    Err(Error::Shape { op: name, .. } | Error::InvalidArgument { op: name, .. }) => {
                        assert_eq!(name, op.name(), "{d}: {op:?} with {n} inputs")
                    }
                    other => panic!("{d}: {op:?} with {n} inputs: {other:?}"),
                }
            }
        }
    }
}
