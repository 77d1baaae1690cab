public import ReflowEngine
import ReflowAutograd
public import ReflowNN
import Foundation

/// Architecture of a convolutional U-Net velocity field v(x, t[, label]) on images [C, H, W].
///
/// With the defaults it is exactly the `UNet` of `../shared/peers/rf_torch.py` (1×28×28,
/// channels 32/64, 2 ResBlocks per level, GroupNorm(8), SiLU, sinusoidal time embedding of
/// 2·c₀ features into a 4·c₀ MLP), with the same PyTorch `state_dict` names, so checkpoints load
/// into that module (`.ci/unet_torch_interop.py`). For L = `channels.count` levels:
///
///     temb   = Linear(2c₀ → 4c₀) SiLU Linear(4c₀ → 4c₀) of sinusoidal(1000·t)   (+ label embedding)
///     stem   = Conv3×3(C → c₀)
///     level l (resolution H/2ˡ): down{l+1} = ResBlock(c_{l−1} → c_l), ResBlock(c_l → c_l) × (nb − 1)
///                                 → skip s_l; then pool{ l>0 ? l+1 : "" } = Conv3×3 stride 2 (c_l → c_l)
///     mid    = ResBlock(c_{L−1}) × 2
///     level l from L−1 to 0:      up{l+1} = ResBlock(cat(h, s_l): 2c_l → c_l), ResBlock(c_l) × (nb − 1);
///                                 then (l > 0) upconv{…} = nearest 2× + Conv3×3(c_l → c_{l−1})
///     out    = GroupNorm SiLU Conv3×3(c₀ → C)
///
/// ResBlock(cin → cout): GN SiLU Conv3×3 (+ Linear(temb → cout) per channel) GN SiLU Conv3×3,
/// plus the input through a 1×1 conv when cin ≠ cout. Optional self-attention blocks follow
/// each ResBlock of the levels whose resolution is listed in `attentionResolutions` (and the
/// middle blocks when the lowest level is listed); optional class labels add an embedding
/// (`labelEmbedding.weight`, one row per class plus a null row for guidance) to the time
/// embedding.
public struct UNetConfig: Codable, Sendable, Equatable {
    /// [C, H, W] of the images.
    public var imageShape: [Int]
    /// Channels per level (c₀, c₁, …); H and W must be divisible by 2^(levels − 1).
    public var channels: [Int]
    public var blocksPerLevel: Int
    /// GroupNorm groups (every channel count must be a multiple).
    public var groups: Int
    /// Resolutions (image side at a level, e.g. 14 or 7) that get self-attention blocks.
    public var attentionResolutions: [Int]
    /// Heads of the attention blocks.
    public var attentionHeads: Int
    /// Sinusoidal time features (default 2·c₀) and the time-embedding width (default 4·c₀).
    public var timeFeatures: Int?
    public var timeEmbedding: Int?
    /// Class labels 0..<classes (nil: unconditional). Label `classes` is the null label.
    public var classes: Int?
    /// Dropout before each ResBlock's second convolution (training only).
    public var dropout: Float
    /// Nonlinearity (SiLU by default; ReLU for the pruning studies).
    public var activation: Activation

    public init(imageShape: [Int] = [1, 28, 28], channels: [Int] = [32, 64], blocksPerLevel: Int = 2, groups: Int = 8,
                attentionResolutions: [Int] = [], attentionHeads: Int = 1, timeFeatures: Int? = nil,
                timeEmbedding: Int? = nil, classes: Int? = nil, dropout: Float = 0, activation: Activation = .silu) {
        self.imageShape = imageShape
        self.channels = channels
        self.blocksPerLevel = blocksPerLevel
        self.groups = groups
        self.attentionResolutions = attentionResolutions
        self.attentionHeads = attentionHeads
        self.timeFeatures = timeFeatures
        self.timeEmbedding = timeEmbedding
        self.classes = classes
        self.dropout = dropout
        self.activation = activation
    }

    enum CodingKeys: String, CodingKey {
        case imageShape, channels, blocksPerLevel, groups, attentionResolutions, attentionHeads, timeFeatures,
             timeEmbedding, classes, dropout, activation
    }

    /// Decodes a partial JSON object; absent keys keep their defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = UNetConfig()
        imageShape = try c.decodeIfPresent([Int].self, forKey: .imageShape) ?? d.imageShape
        channels = try c.decodeIfPresent([Int].self, forKey: .channels) ?? d.channels
        blocksPerLevel = try c.decodeIfPresent(Int.self, forKey: .blocksPerLevel) ?? d.blocksPerLevel
        groups = try c.decodeIfPresent(Int.self, forKey: .groups) ?? d.groups
        attentionResolutions = try c.decodeIfPresent([Int].self, forKey: .attentionResolutions) ?? []
        attentionHeads = try c.decodeIfPresent(Int.self, forKey: .attentionHeads) ?? 1
        timeFeatures = try c.decodeIfPresent(Int.self, forKey: .timeFeatures)
        timeEmbedding = try c.decodeIfPresent(Int.self, forKey: .timeEmbedding)
        classes = try c.decodeIfPresent(Int.self, forKey: .classes)
        dropout = try c.decodeIfPresent(Float.self, forKey: .dropout) ?? 0
        activation = try c.decodeIfPresent(Activation.self, forKey: .activation) ?? .silu
    }

    public var levels: Int { channels.count }
    public var features: Int { timeFeatures ?? 2 * channels[0] }
    public var embedding: Int { timeEmbedding ?? 4 * channels[0] }
    /// Side (height) of level l.
    func side(_ l: Int) -> (Int, Int) { (imageShape[1] >> l, imageShape[2] >> l) }
    func hasAttention(level l: Int) -> Bool { attentionResolutions.contains(side(l).0) }

    public func validationError() -> (pointer: String, message: String)? {
        guard imageShape.count == 3 else { return ("/imageShape", "must be [channels, height, width]") }
        if !(1...4).contains(imageShape[0]) { return ("/imageShape/0", "channels must be 1 to 4, got \(imageShape[0])") }
        for i in 1...2 where !(4...256).contains(imageShape[i]) {
            return ("/imageShape/\(i)", "must be in [4, 256], got \(imageShape[i])")
        }
        if !(1...5).contains(channels.count) { return ("/channels", "must list 1 to 5 levels, got \(channels.count)") }
        if !(1...64).contains(groups) { return ("/groups", "must be in [1, 64], got \(groups)") }
        for (i, c) in channels.enumerated() {
            if !(1...1024).contains(c) { return ("/channels/\(i)", "must be in [1, 1024], got \(c)") }
            if c % groups != 0 { return ("/channels/\(i)", "\(c) is not a multiple of groups (\(groups))") }
        }
        let div = 1 << (channels.count - 1)
        if imageShape[1] % div != 0 || imageShape[2] % div != 0 {
            return ("/channels", "\(channels.count) levels need height and width divisible by \(div); the image is \(imageShape[1])×\(imageShape[2])")
        }
        if !(1...8).contains(blocksPerLevel) { return ("/blocksPerLevel", "must be in [1, 8], got \(blocksPerLevel)") }
        let sides = Set((0..<channels.count).map { side($0).0 })
        for (i, r) in attentionResolutions.enumerated() where !sides.contains(r) {
            return ("/attentionResolutions/\(i)", "\(r) is not a level's resolution (\(sides.sorted().map(String.init).joined(separator: ", ")))")
        }
        if !(1...16).contains(attentionHeads) { return ("/attentionHeads", "must be in [1, 16], got \(attentionHeads)") }
        for (l, c) in channels.enumerated() where hasAttention(level: l) && c % attentionHeads != 0 {
            return ("/attentionHeads", "\(c) channels at level \(l) are not divisible into \(attentionHeads) heads")
        }
        if let f = timeFeatures, !(2...1024).contains(f) || f % 2 != 0 { return ("/timeFeatures", "must be an even number in [2, 1024], got \(f)") }
        if let e = timeEmbedding, !(1...4096).contains(e) { return ("/timeEmbedding", "must be in [1, 4096], got \(e)") }
        if let k = classes, !(1...100_000).contains(k) { return ("/classes", "must be in [1, 100000], got \(k)") }
        if !(dropout >= 0 && dropout < 1) { return ("/dropout", "must be in [0, 1), got \(dropout)") }
        if activation != .silu && activation != .relu { return ("/activation", "must be silu or relu for a U-Net") }
        return nil
    }

    // MARK: structure (one walk shared by the parameter count, the FLOP count and the network)

    /// One ResBlock: (cin, cout, spatial positions, attention after it).
    struct BlockPlan { var name: String; var cin: Int; var cout: Int; var side: (Int, Int); var attention: Bool }

    /// Every ResBlock in forward order with its name (`down1.0`, `mid.1`, `up2.0`, …).
    var blockPlan: [BlockPlan] {
        var out = [BlockPlan]()
        let nb = blocksPerLevel, L = levels
        for l in 0..<L {
            for i in 0..<nb {
                let cin = i == 0 ? (l == 0 ? channels[0] : channels[l - 1]) : channels[l]
                out.append(BlockPlan(name: "down\(l + 1).\(i)", cin: cin, cout: channels[l], side: side(l), attention: hasAttention(level: l)))
            }
        }
        for i in 0..<2 {
            out.append(BlockPlan(name: "mid.\(i)", cin: channels[L - 1], cout: channels[L - 1], side: side(L - 1),
                                 attention: hasAttention(level: L - 1)))
        }
        for l in stride(from: L - 1, through: 0, by: -1) {
            for i in 0..<nb {
                out.append(BlockPlan(name: "up\(l + 1).\(i)", cin: i == 0 ? 2 * channels[l] : channels[l], cout: channels[l],
                                     side: side(l), attention: hasAttention(level: l)))
            }
        }
        return out
    }

    static func poolName(_ l: Int) -> String { l == 0 ? "pool" : "pool\(l + 1)" }
    static func upconvName(_ l: Int) -> String { l == 1 ? "upconv" : "upconv\(l)" }
    static func attentionName(_ block: String) -> String {
        let parts = block.split(separator: ".")
        return "\(parts[0])_attn.\(parts[1])"
    }
}

extension UNetConfig: ModelConfig {
    public static var kind: String { "unet" }
    public static var version: Int { 1 }

    public init() { self.init(imageShape: [1, 28, 28]) }

    public var pointShape: [Int] { imageShape }

    public var parameterCount: Int {
        let e = embedding, cIn = imageShape[0], c0 = channels[0]
        var n = features * e + e + e * e + e                      // temb
        if let k = classes { n += (k + 1) * e }                   // label embedding (+ null row)
        n += cIn * c0 * 9 + c0                                    // stem
        for b in blockPlan {
            n += 2 * b.cin + b.cin * b.cout * 9 + b.cout + e * b.cout + b.cout + 2 * b.cout + b.cout * b.cout * 9 + b.cout
            if b.cin != b.cout { n += b.cin * b.cout + b.cout }
            if b.attention { n += 2 * b.cout + b.cout * 3 * b.cout + 3 * b.cout + b.cout * b.cout + b.cout }
        }
        for l in 0..<(levels - 1) { n += channels[l] * channels[l] * 9 + channels[l] }          // pools
        for l in 1..<max(1, levels) { n += channels[l] * channels[l - 1] * 9 + channels[l - 1] } // upconvs
        n += 2 * c0 + c0 * cIn * 9 + cIn                          // out
        return n
    }

    /// Multiply-adds of one forward pass per image (convolutions, linear layers, attention).
    public var forwardFlopsPerRow: Int {
        let e = embedding, cIn = imageShape[0], c0 = channels[0]
        let (h, w) = (imageShape[1], imageShape[2])
        var n = features * e + e * e
        n += h * w * c0 * cIn * 9
        for b in blockPlan {
            let s = b.side.0 * b.side.1
            n += s * b.cout * b.cin * 9 + s * b.cout * b.cout * 9 + e * b.cout
            if b.cin != b.cout { n += s * b.cout * b.cin }
            if b.attention { n += s * 4 * b.cout * b.cout + 2 * s * s * b.cout }
        }
        for l in 0..<(levels - 1) { let (a, bb) = side(l + 1); n += a * bb * channels[l] * channels[l] * 9 }
        for l in 1..<max(1, levels) { let (a, bb) = side(l - 1); n += a * bb * channels[l - 1] * channels[l] * 9 }
        n += h * w * c0 * cIn * 9
        return n
    }

    /// Floats kept for backward per image: every recorded node of the forward pass (the fused
    /// GroupNorm+SiLU keeps one tensor, a convolution its output, an addition its output…);
    /// counted from the same block plan the network is built from.
    public var activationFloatsPerRow: Int {
        let (h, w) = (imageShape[1], imageShape[2]), c0 = channels[0]
        var n = 4 * h * w * imageShape[0] + h * w * c0          // inputs, x_t, stem, output, loss terms
        for b in blockPlan {
            let s = b.side.0 * b.side.1
            // gn1+act, conv1, +temb, gn2+act, (dropout), conv2, skip conv, residual sum (+ input concat)
            n += s * (b.cin * 2 + b.cout * 6)
            if b.attention { n += s * (2 * b.cout + 3 * b.cout + b.cout * 2) + attentionHeads * s * s }
        }
        for l in 0..<levels { let (a, bb) = side(l); n += a * bb * channels[l] * 3 }  // pools, upsampling, upconvs
        return n
    }

    /// Each ResBlock's output (`down1.0`, …; activations) and, after it, its attention block's
    /// V (`down2_attn.0`, …), in forward order.
    public var featureSites: [FeatureSite] {
        blockPlan.flatMap { b -> [FeatureSite] in
            let floats = b.cout * b.side.0 * b.side.1
            let block = FeatureSite(name: b.name, kind: .activation, floatsPerRow: floats)
            return b.attention ? [block, FeatureSite(name: UNetConfig.attentionName(b.name), kind: .attentionValue, floatsPerRow: floats)] : [block]
        }
    }

    public func makeNetwork(rng: inout Random) -> any VelocityNetwork { UNet(self, rng: &rng) }
    public func makeNetwork(stateDict: [String: Tensor]) throws -> any VelocityNetwork {
        try UNet(self, stateDict: stateDict)
    }
}
