import ReflowEngine

/// Procedural image sets that need no files: labelled anti-aliased **shapes** in ten classes and
/// unlabelled **strokes**. Both are one-channel 8-bit ``ImageSet``s, square, `size`×`size`
/// (default 28, like MNIST).
///
/// **Reproducibility.** Image `i` of a set with seed `seed` depends on `(seed, i, size)` only:
/// it is drawn from its own ``Random`` seeded with
/// `mix(seed ^ mix(UInt64(i) ^ tag))`, where `mix` is the SplitMix64 finaliser
/// (`z += 0x9E3779B97F4A7C15; z = (z ^ z>>30)·0xBF58476D1CE4E5B9; z = (z ^ z>>27)·0x94D049BB133111EB; z ^ z>>31`,
/// wrapping) and `tag` is `0x534841504553` ("SHAPES") or `0x5354524F4B45` ("STROKE"). So any
/// image can be regenerated alone (``shapeImage(index:seed:size:)``,
/// ``strokeImage(index:seed:size:)``), sets of different counts share their first images, and
/// the pixels are the same on every machine: rendering uses only IEEE-754 +, −, ×, ÷ and √ in
/// `Float` (rotations come from a random slope t as (1, t)/√(1 + t²), not from sin/cos).
///
/// **Shapes.** Image `i` has class `i mod 10` (a set of 10·k images is exactly balanced).
/// With s = size/28 and u a fresh ``Random/uniformFloat()`` at each step, the draws are, in
/// this order:
/// 1. half-extent r = size · (0.24 + 0.12u);
/// 2. stroke width w = s · (1.5 + 1.0u);
/// 3. centre x then y, each m + (size − 2m)·u with the margin m = 1.15r + w/2 + 0.5
///    (so the whole shape stays inside the image);
/// 4. rotation slope t = T·(2u − 1) giving (cos, sin) = (1, t)/√(1 + t²), turned a further 45°
///    for the X; T = tan 15° for every class except the triangle and the ring pair (tan 20°);
/// 5. brightness b = 0.75 + 0.25u.
///
/// The shape is a signed distance d(p) (pixels, negative inside) in the rotated frame centred
/// at the centre (y down), and pixel (x, y), sampled at its centre (x + ½, y + ½), is
/// `round(255 · b · clamp(½ − d, 0, 1))`: about one pixel of anti-aliasing. The classes
/// (``classNames``):
///
/// | label | name | distance |
/// |---|---|---|
/// | 0 | circle | ring of radius 0.9r, width w |
/// | 1 | disc | filled disc of radius 0.9r |
/// | 2 | square | square outline of half-side 0.8r, width w |
/// | 3 | filled square | filled square of half-side 0.75r |
/// | 4 | triangle | filled equilateral triangle, apex up, half-side 0.95r |
/// | 5 | plus | two bars 2r × w crossing at right angles, axis-aligned ± 15° |
/// | 6 | cross | the plus turned by 45° (an X) |
/// | 7 | bars | two parallel horizontal bars 2r × w, 0.9r apart |
/// | 8 | rings | two rings of radius 0.48r, width w, centres ±0.52r apart on the x axis |
/// | 9 | diamond | filled rhombus, half-diagonals 0.65r across and r tall |
///
/// **Strokes.** Like the `synthetic_images` stand-in for MNIST in the reference Python peers:
/// each image has 1–3 line segments (`1 + int(below: 3)`), then for each segment its end points
/// p then q, each coordinate 4 + (size − 8)·u. Pixel (x, y) at integer coordinates has value
/// `round(255 · max over segments of f(dist))`, where dist is the distance from (x, y) to the
/// segment and f(d) = (1 − d²/4)⁴ for d < 2, else 0, a compact stand-in for exp(−d²).
public enum BuiltinImages {
    /// Names of the ten shape classes, by label.
    public static let classNames = ["circle", "disc", "square", "filled square", "triangle",
                                    "plus", "cross", "bars", "rings", "diamond"]
    /// Supported image sizes (pixels per side).
    public static let sizes = 8...1024

    static let shapesTag: UInt64 = 0x5348_4150_4553
    static let strokesTag: UInt64 = 0x5354_524F_4B45

    /// `count` shape images with labels `i mod 10` and ``classNames``.
    ///
    /// - Throws: ``ImageDataError`` when `count` or `size` is out of range or the set would
    ///   exceed `limits` (checked before allocating).
    public static func shapes(count: Int, seed: UInt64, size: Int = 28,
                              limits: ImageLimits = .default) throws(ImageDataError) -> ImageSet {
        try check(count: count, size: size, limits: limits, name: "shapes")
        let per = size * size
        var pixels = [UInt8](repeating: 0, count: count * per)
        var labels = [Int32](repeating: 0, count: count)
        pixels.withUnsafeMutableBufferPointer { p in
            for i in 0..<count { labels[i] = renderShape(index: i, seed: seed, size: size, into: p.baseAddress! + i * per) }
        }
        return try ImageSet(channels: 1, height: size, width: size, pixels: .bytes(pixels), labels: labels,
                            classNames: classNames)
    }

    /// Image `index` of ``shapes(count:seed:size:limits:)`` alone: size·size bytes and its label.
    public static func shapeImage(index: Int, seed: UInt64, size: Int = 28) throws(ImageDataError) -> (pixels: [UInt8], label: Int32) {
        try check(index: index, size: size, name: "shapes")
        var pixels = [UInt8](repeating: 0, count: size * size)
        let label = pixels.withUnsafeMutableBufferPointer { renderShape(index: index, seed: seed, size: size, into: $0.baseAddress!) }
        return (pixels, label)
    }

    /// `count` unlabelled stroke images.
    ///
    /// - Throws: ``ImageDataError`` when `count` or `size` is out of range or the set would
    ///   exceed `limits` (checked before allocating).
    public static func strokes(count: Int, seed: UInt64, size: Int = 28,
                               limits: ImageLimits = .default) throws(ImageDataError) -> ImageSet {
        try check(count: count, size: size, limits: limits, name: "strokes")
        let per = size * size
        var pixels = [UInt8](repeating: 0, count: count * per)
        pixels.withUnsafeMutableBufferPointer { p in
            for i in 0..<count { renderStrokes(index: i, seed: seed, size: size, into: p.baseAddress! + i * per) }
        }
        return try ImageSet(channels: 1, height: size, width: size, pixels: .bytes(pixels))
    }

    /// Image `index` of ``strokes(count:seed:size:limits:)`` alone: size·size bytes.
    public static func strokeImage(index: Int, seed: UInt64, size: Int = 28) throws(ImageDataError) -> [UInt8] {
        try check(index: index, size: size, name: "strokes")
        var pixels = [UInt8](repeating: 0, count: size * size)
        pixels.withUnsafeMutableBufferPointer { renderStrokes(index: index, seed: seed, size: size, into: $0.baseAddress!) }
        return pixels
    }

    // MARK: Checks and seeding

    private static func check(count: Int, size: Int, limits: ImageLimits, name: String) throws(ImageDataError) {
        guard sizes.contains(size) else { throw ImageDataError(file: name, "size \(size) outside \(sizes.lowerBound)…\(sizes.upperBound)") }
        try limits.check(count: count, channels: 1, height: size, width: size, bytesPerValue: 1, file: name)
    }

    private static func check(index: Int, size: Int, name: String) throws(ImageDataError) {
        guard sizes.contains(size) else { throw ImageDataError(file: name, "size \(size) outside \(sizes.lowerBound)…\(sizes.upperBound)") }
        guard index >= 0 else { throw ImageDataError(file: name, "image index \(index) is negative") }
    }

    /// SplitMix64's finaliser (after its increment).
    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The generator of image `index` (see the type's documentation).
    static func imageRandom(seed: UInt64, index: Int, tag: UInt64) -> Random {
        Random(seed: mix(seed ^ mix(UInt64(index) ^ tag)))
    }

    // MARK: Shapes

    @inline(__always) private static func clamp01(_ v: Float) -> Float { Swift.min(Swift.max(v, 0), 1) }

    @inline(__always) private static func length(_ x: Float, _ y: Float) -> Float { (x * x + y * y).squareRoot() }

    /// Signed distance to an axis-aligned box of half-sizes (hx, hy) centred at the origin.
    @inline(__always)
    private static func box(_ x: Float, _ y: Float, _ hx: Float, _ hy: Float) -> Float {
        let qx = Swift.abs(x) - hx, qy = Swift.abs(y) - hy
        return length(Swift.max(qx, 0), Swift.max(qy, 0)) + Swift.min(Swift.max(qx, qy), 0)
    }

    /// Signed distance to an equilateral triangle of half-side `h`, centroid at the origin, apex
    /// towards −y (up in image rows).
    @inline(__always)
    private static func triangle(_ x: Float, _ y: Float, _ h: Float) -> Float {
        let k: Float = 1.732_050_8  // √3
        var px = Swift.abs(x) - h, py = -y + h / k
        if px + k * py > 0 { (px, py) = ((px - k * py) / 2, (-k * px - py) / 2) }
        px -= Swift.min(Swift.max(px, -2 * h), 0)
        let d = length(px, py)
        return py < 0 ? d : -d
    }

    /// Renders image `index` of the shapes set into `out` (size·size bytes); returns its label.
    static func renderShape(index: Int, seed: UInt64, size: Int, into out: UnsafeMutablePointer<UInt8>) -> Int32 {
        var rng = imageRandom(seed: seed, index: index, tag: shapesTag)
        let label = index % 10
        let side = Float(size), s = side / 28
        let r = side * (0.24 + 0.12 * rng.uniformFloat())
        let w = s * (1.5 + 1.0 * rng.uniformFloat())
        let m = 1.15 * r + w / 2 + 0.5
        let span = Swift.max(side - 2 * m, 0)
        let cx = m + span * rng.uniformFloat()
        let cy = m + span * rng.uniformFloat()
        let maxSlope: Float = (label == 4 || label == 8) ? 0.363_970_23 : 0.267_949_2  // tan 20°, tan 15°
        let t = maxSlope * (2 * rng.uniformFloat() - 1)
        let norm = (1 + t * t).squareRoot()
        var c = 1 / norm, sn = t / norm
        if label == 6 {  // a further 45°: (c, s)·(√½, √½)
            let h: Float = 0.707_106_77
            (c, sn) = ((c - sn) * h, (c + sn) * h)
        }
        let brightness = 0.75 + 0.25 * rng.uniformFloat()
        let half = w / 2

        for py in 0..<size {
            let dy = Float(py) + 0.5 - cy
            for px in 0..<size {
                let dx = Float(px) + 0.5 - cx
                // The rotated frame: p turned by −θ.
                let x = c * dx + sn * dy, y = -sn * dx + c * dy
                let d: Float
                switch label {
                case 0: d = Swift.abs(length(x, y) - 0.9 * r) - half
                case 1: d = length(x, y) - 0.9 * r
                case 2: d = Swift.abs(box(x, y, 0.8 * r, 0.8 * r)) - half
                case 3: d = box(x, y, 0.75 * r, 0.75 * r)
                case 4: d = triangle(x, y, 0.95 * r)
                case 5, 6: d = Swift.min(box(x, y, r, half), box(x, y, half, r))
                case 7: d = Swift.min(box(x, y - 0.45 * r, r, half), box(x, y + 0.45 * r, r, half))
                case 8:
                    let a = Swift.abs(length(x - 0.52 * r, y) - 0.48 * r)
                    let b = Swift.abs(length(x + 0.52 * r, y) - 0.48 * r)
                    d = Swift.min(a, b) - half
                default:  // 9: rhombus |x|/a + |y|/b ≤ 1, distance along the edge normals
                    let a = 0.65 * r, b = r
                    d = (Swift.abs(x) / a + Swift.abs(y) / b - 1) * (a * b / length(a, b))
                }
                let v = (255 * brightness * clamp01(0.5 - d)).rounded()
                out[py * size + px] = UInt8(Swift.min(v, 255))
            }
        }
        return Int32(label)
    }

    // MARK: Strokes

    /// Renders image `index` of the strokes set into `out` (size·size bytes).
    static func renderStrokes(index: Int, seed: UInt64, size: Int, into out: UnsafeMutablePointer<UInt8>) {
        var rng = imageRandom(seed: seed, index: index, tag: strokesTag)
        let side = Float(size)
        let segments = 1 + rng.int(below: 3)
        var seg: [(px: Float, py: Float, dx: Float, dy: Float, l2: Float)] = []
        for _ in 0..<segments {
            let px = 4 + (side - 8) * rng.uniformFloat(), py = 4 + (side - 8) * rng.uniformFloat()
            let qx = 4 + (side - 8) * rng.uniformFloat(), qy = 4 + (side - 8) * rng.uniformFloat()
            let dx = qx - px, dy = qy - py
            seg.append((px, py, dx, dy, Swift.max(dx * dx + dy * dy, 1e-6)))
        }
        for y in 0..<size {
            for x in 0..<size {
                var v: Float = 0
                for g in seg {
                    let ax = Float(x) - g.px, ay = Float(y) - g.py
                    let u = clamp01((ax * g.dx + ay * g.dy) / g.l2)
                    let ex = ax - u * g.dx, ey = ay - u * g.dy
                    let d2 = ex * ex + ey * ey
                    if d2 < 4 {
                        let f = 1 - d2 / 4, f2 = f * f
                        v = Swift.max(v, f2 * f2)
                    }
                }
                out[y * size + x] = UInt8((255 * v).rounded())
            }
        }
    }
}
