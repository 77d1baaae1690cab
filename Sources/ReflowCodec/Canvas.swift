/// An RGB raster for the pictures reflowd renders itself (scatter plots of samples, coupling
/// lines z0 → z1), encoded with ``PNG``. Data coordinates map to pixels through a fixed window.
public struct Canvas: Sendable {
    public let width: Int, height: Int
    /// Row-major RGB bytes, `width · height · 3`.
    public private(set) var pixels: [UInt8]
    /// Visible data window: x ∈ [xMin, xMax], y ∈ [yMin, yMax] (y grows upwards).
    public var xMin: Float, xMax: Float, yMin: Float, yMax: Float

    /// An RGB colour.
    public struct Color: Sendable, Equatable {
        public var r: UInt8, g: UInt8, b: UInt8
        public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { self.r = r; self.g = g; self.b = b }
        public static let white = Color(255, 255, 255), black = Color(0, 0, 0), gray = Color(150, 150, 150)
        public static let blue = Color(31, 119, 180), orange = Color(255, 127, 14), green = Color(44, 160, 44)
        public static let red = Color(214, 39, 40)
    }

    public init(width: Int, height: Int, window: (xMin: Float, xMax: Float, yMin: Float, yMax: Float),
                background: Color = .white) {
        precondition(width > 0 && height > 0, "Canvas: size must be positive")
        self.width = width
        self.height = height
        (xMin, xMax, yMin, yMax) = window
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = background.r; pixels[3 * i + 1] = background.g; pixels[3 * i + 2] = background.b
        }
    }

    /// Pixel coordinates of a data point (may be outside the canvas).
    public func pixel(_ x: Float, _ y: Float) -> (Int, Int) {
        let px = (x - xMin) / (xMax - xMin) * Float(width - 1)
        let py = (yMax - y) / (yMax - yMin) * Float(height - 1)
        guard px.isFinite, py.isFinite, abs(px) < 1e6, abs(py) < 1e6 else { return (-1, -1) }
        return (Int(px.rounded()), Int(py.rounded()))
    }

    /// Blends `color` into one pixel with opacity `alpha` ∈ [0, 1]; outside pixels are ignored.
    public mutating func blend(_ px: Int, _ py: Int, _ color: Color, alpha: Float) {
        guard px >= 0, py >= 0, px < width, py < height else { return }
        let i = 3 * (py * width + px), a = max(0, min(1, alpha))
        func mix(_ old: UInt8, _ new: UInt8) -> UInt8 { UInt8((Float(old) * (1 - a) + Float(new) * a).rounded()) }
        pixels[i] = mix(pixels[i], color.r)
        pixels[i + 1] = mix(pixels[i + 1], color.g)
        pixels[i + 2] = mix(pixels[i + 2], color.b)
    }

    /// Draws points `xy` (`[x0, y0, x1, y1, …]`) as small squares of side `2·radius + 1`.
    public mutating func scatter(_ xy: [Float], color: Color, alpha: Float = 0.5, radius: Int = 1) {
        for i in stride(from: 0, to: xy.count - 1, by: 2) {
            let (px, py) = pixel(xy[i], xy[i + 1])
            if px < -radius || py < -radius { continue }
            for dy in -radius...radius { for dx in -radius...radius { blend(px + dx, py + dy, color, alpha: alpha) } }
        }
    }

    /// Draws a straight line between two data points (DDA, one sample per pixel step).
    public mutating func line(from a: (Float, Float), to b: (Float, Float), color: Color, alpha: Float = 0.3) {
        let (x0, y0) = pixel(a.0, a.1), (x1, y1) = pixel(b.0, b.1)
        if (x0 < 0 && x1 < 0) || (y0 < 0 && y1 < 0) { return }
        let steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        guard steps < 100_000 else { return }
        for s in 0...steps {
            let f = Float(s) / Float(steps)
            blend(Int((Float(x0) + f * Float(x1 - x0)).rounded()), Int((Float(y0) + f * Float(y1 - y0)).rounded()),
                  color, alpha: alpha)
        }
    }

    /// Draws the axes through the origin (when visible) in light gray.
    public mutating func axes() {
        let (ox, oy) = pixel(0, 0)
        if ox >= 0 && ox < width { for y in 0..<height { blend(ox, y, .gray, alpha: 0.4) } }
        if oy >= 0 && oy < height { for x in 0..<width { blend(x, oy, .gray, alpha: 0.4) } }
    }

    /// A 3×5 pixel font (digits, A–Z, a few signs; lower case is drawn as upper case): each
    /// glyph is 15 bits, five rows of three from the top, most significant bit first.
    static let glyphs: [Character: UInt16] = [
        "0": 0x7B6F, "1": 0x2C97, "2": 0x73E7, "3": 0x73CF, "4": 0x5BC9, "5": 0x79CF,
        "6": 0x79EF, "7": 0x7249, "8": 0x7BEF, "9": 0x7BCF, "A": 0x2BED, "B": 0x6BAE,
        "C": 0x3923, "D": 0x6B6E, "E": 0x79A7, "F": 0x79A4, "G": 0x396B, "H": 0x5BED,
        "I": 0x7497, "J": 0x126A, "K": 0x5BAD, "L": 0x4927, "M": 0x5FED, "N": 0x6B6D,
        "O": 0x2B6A, "P": 0x6BA4, "Q": 0x2B73, "R": 0x6BAD, "S": 0x388E, "T": 0x7492,
        "U": 0x5B6F, "V": 0x5B6A, "W": 0x5BFD, "X": 0x5AAD, "Y": 0x5A92, "Z": 0x72A7,
        ".": 0x0002, "%": 0x52A5, ":": 0x0410, "-": 0x01C0, "_": 0x0007, "(": 0x1491,
        ")": 0x4494, ",": 0x0014, "/": 0x12A4, "=": 0x0E38, "+": 0x05D0,
    ]

    /// Draws `text` with its top-left corner at pixel (`x`, `y`), each font pixel a
    /// `scale`×`scale` square; unknown characters are blanks. Returns the x after the text.
    @discardableResult
    public mutating func text(_ text: String, x: Int, y: Int, color: Color, scale: Int = 2) -> Int {
        var cx = x
        for ch in text.uppercased() {
            if let g = Canvas.glyphs[ch] {
                for row in 0..<5 {
                    for col in 0..<3 where g & (1 << (14 - (row * 3 + col))) != 0 {
                        for dy in 0..<scale { for dx in 0..<scale { blend(cx + col * scale + dx, y + row * scale + dy, color, alpha: 1) } }
                    }
                }
            }
            cx += 4 * scale
        }
        return cx
    }

    /// PNG bytes of the canvas.
    public func png() throws -> [UInt8] { try PNG.encodeRGB(width: width, height: height, pixels: pixels) }
}
