import numpy as np
import pytest

from pixelrnn_tf.masks import causal_mask, channel_groups


def test_channel_groups_contiguous_and_uneven():
    np.testing.assert_array_equal(channel_groups(3, 3), [0, 1, 2])
    np.testing.assert_array_equal(channel_groups(6, 3), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(channel_groups(4, 3), [0, 0, 1, 2])
    np.testing.assert_array_equal(channel_groups(5, 1), [0, 0, 0, 0, 0])


@pytest.mark.parametrize("mask_type,centre", [("A", 0.0), ("B", 1.0)])
def test_3x3_single_channel(mask_type, centre):
    expected = np.array([[1, 1, 1],
                         [1, centre, 0],
                         [0, 0, 0]], np.float32)
    mask = causal_mask(3, 3, 1, 1, mask_type)
    assert mask.shape == (3, 3, 1, 1)
    np.testing.assert_array_equal(mask[:, :, 0, 0], expected)


def test_7x7_mask_a_single_channel():
    expected = np.zeros((7, 7), np.float32)
    expected[:3] = 1
    expected[3, :3] = 1
    np.testing.assert_array_equal(causal_mask(7, 7, 1, 4, "A")[:, :, 0, 2], expected)
    assert causal_mask(7, 7, 1, 4, "A").dtype == np.float32


@pytest.mark.parametrize("mask_type,centre", [("A", 0.0), ("B", 1.0)])
def test_column_and_row_kernels(mask_type, centre):
    # 3x1 (three rows, one column): above, centre, below
    np.testing.assert_array_equal(causal_mask(3, 1, 1, 1, mask_type)[:, 0, 0, 0],
                                  [1, centre, 0])
    # 1x3 (one row, three columns): left, centre, right
    np.testing.assert_array_equal(causal_mask(1, 3, 1, 1, mask_type)[0, :, 0, 0],
                                  [1, centre, 0])


def test_1x1_rgb_mask_a_and_b():
    # rows: input group R, G, B; columns: output group R, G, B
    a = np.array([[0, 1, 1],
                  [0, 0, 1],
                  [0, 0, 0]], np.float32)
    b = np.array([[1, 1, 1],
                  [0, 1, 1],
                  [0, 0, 1]], np.float32)
    np.testing.assert_array_equal(causal_mask(1, 1, 3, 3, "A", 3)[0, 0], a)
    np.testing.assert_array_equal(causal_mask(1, 1, 3, 3, "B", 3)[0, 0], b)


def test_rgb_mask_a_first_layer_3_inputs_6_outputs():
    mask = causal_mask(3, 3, 3, 6, "A", colour_groups=3)
    centre = np.array([[0, 0, 1, 1, 1, 1],   # R feeds G and B features
                       [0, 0, 0, 0, 1, 1],   # G feeds B features
                       [0, 0, 0, 0, 0, 0]],  # B feeds nothing at the centre
                      np.float32)
    np.testing.assert_array_equal(mask[1, 1], centre)
    np.testing.assert_array_equal(mask[0], np.ones((3, 3, 6)))  # whole row above
    np.testing.assert_array_equal(mask[1, 0], np.ones((3, 6)))  # left neighbour
    np.testing.assert_array_equal(mask[1, 2], np.zeros((3, 6)))  # right neighbour
    np.testing.assert_array_equal(mask[2], np.zeros((3, 3, 6)))  # row below


def test_rgb_mask_b_hidden_features():
    mask = causal_mask(1, 1, 6, 3, "B", colour_groups=3)[0, 0]
    expected = np.array([[1, 1, 1], [1, 1, 1],
                         [0, 1, 1], [0, 1, 1],
                         [0, 0, 1], [0, 0, 1]], np.float32)
    np.testing.assert_array_equal(mask, expected)


def test_out_blocks_group_each_gate_alike():
    # 4 gates x 3 units, RGB: each gate's units are R, G, B
    mask = causal_mask(1, 1, 3, 12, "B", colour_groups=3, out_blocks=4)[0, 0]
    one_gate = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1]], np.float32)
    np.testing.assert_array_equal(mask, np.tile(one_gate, (1, 4)))
    # without blocks the 12 outputs would be split into thirds across gates: different mask
    assert not np.array_equal(causal_mask(1, 1, 3, 12, "B", 3)[0, 0], mask)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mask_type"):
        causal_mask(3, 3, 1, 1, "C")
    with pytest.raises(ValueError, match="odd"):
        causal_mask(2, 1, 1, 1, "B")
    with pytest.raises(ValueError, match="out_blocks"):
        causal_mask(1, 1, 3, 10, "B", 3, out_blocks=4)
