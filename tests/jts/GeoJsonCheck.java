/*
 * GeoJsonCheck: does QuPath's geometry library accept these GeoJSON files?
 *
 * QuPath cannot run in CI, so this checker reads fseg's GeoJSON with JTS
 * (Debian's libjts-java, the library QuPath's ROIs are built on) and with the
 * rules QuPath's GeoJSON import applies. For every file it checks:
 *
 *   1. the file is UTF-8 JSON (NaN and Infinity are not JSON);
 *   2. the top level is a FeatureCollection, or an array of Features;
 *   3. every Feature has an object "properties" with objectType "annotation",
 *      a "classification" object with a non-empty string "name" and a "color"
 *      array of three integers 0-255, and, when present, an "id" that is a UUID
 *      and "measurements" that map names to finite numbers;
 *   4. its geometry is a Polygon or MultiPolygon whose coordinates are finite
 *      numbers, read by JTS's GeoJsonReader (closed rings, enough points);
 *   5. the JTS geometry is valid (IsValidOp);
 *   6. after GeometryPrecisionReducer.reduce onto a 0.01 px grid
 *      (PrecisionModel(100), what QuPath 0.6 and later do on import) it is
 *      still valid, not empty, and keeps its area to within 1%;
 *   7. with every coordinate rounded to a 32-bit float (QuPath's ROIs and its
 *      default GeometryFactory store coordinates as floats) it is still valid.
 *
 * Usage: java -cp jts-core.jar:jts-io-common.jar:json-simple.jar:DIR GeoJsonCheck FILE...
 * Exit status: 0 when every file passes (one "ok" line per file on stdout),
 * 1 at the first violation (one line on stderr naming file, feature and rule),
 * 2 on bad usage.
 */

import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Map;
import java.util.UUID;

import org.json.simple.DeserializationException;
import org.json.simple.JsonArray;
import org.json.simple.JsonObject;
import org.json.simple.Jsoner;
import org.locationtech.jts.geom.CoordinateSequence;
import org.locationtech.jts.geom.CoordinateSequenceFilter;
import org.locationtech.jts.geom.Geometry;
import org.locationtech.jts.geom.PrecisionModel;
import org.locationtech.jts.io.ParseException;
import org.locationtech.jts.io.geojson.GeoJsonReader;
import org.locationtech.jts.operation.valid.IsValidOp;
import org.locationtech.jts.operation.valid.TopologyValidationError;
import org.locationtech.jts.precision.GeometryPrecisionReducer;

public final class GeoJsonCheck {

    /** QuPath 0.6+ reduces imported geometries onto this grid: 100 steps per pixel. */
    static final double QUPATH_PRECISION_SCALE = 100.0;
    /** The largest relative area change the precision reduction may cause. */
    static final double MAX_AREA_CHANGE = 0.01;

    /** One broken rule: where, and which rule. */
    static final class Violation extends Exception {
        private static final long serialVersionUID = 1L;

        Violation(String message) {
            super(message);
        }
    }

    public static void main(String[] args) {
        if (args.length == 0) {
            System.err.println("usage: GeoJsonCheck FILE.geojson...");
            System.exit(2);
        }
        for (String name : args) {
            try {
                System.out.println("ok " + name + ": " + checkFile(Paths.get(name)));
            } catch (Violation v) {
                System.err.println("GeoJSON check failed: " + name + ": " + v.getMessage());
                System.exit(1);
            }
        }
    }

    static String checkFile(Path path) throws Violation {
        String text = readUtf8(path);
        Object root;
        try {
            root = Jsoner.deserialize(text);
        } catch (DeserializationException e) {
            String hint = text.contains("NaN") || text.contains("Infinity")
                    ? " (NaN and Infinity are not JSON numbers: coordinates must be finite)"
                    : "";
            throw new Violation("not valid JSON: " + e.getMessage() + hint);
        }
        JsonArray features;
        if (root instanceof JsonObject) {
            JsonObject collection = (JsonObject) root;
            if (!"FeatureCollection".equals(collection.get("type"))) {
                throw new Violation("the top level is an object of type " + quote(collection.get("type"))
                        + ", not a FeatureCollection (or an array of Features)");
            }
            Object list = collection.get("features");
            if (!(list instanceof JsonArray)) {
                throw new Violation("the FeatureCollection has no \"features\" array");
            }
            features = (JsonArray) list;
        } else if (root instanceof JsonArray) {
            features = (JsonArray) root;
        } else {
            throw new Violation("the top level is neither a FeatureCollection nor an array of Features");
        }
        int polygons = 0;
        for (int i = 0; i < features.size(); i++) {
            polygons += checkFeature(features.get(i), i);
        }
        return features.size() + " features, " + polygons + " polygons";
    }

    /** Checks one Feature; returns how many polygons its geometry holds. */
    static int checkFeature(Object item, int index) throws Violation {
        String where = "feature " + index;
        if (!(item instanceof JsonObject)) {
            throw new Violation(where + " is not a JSON object");
        }
        JsonObject feature = (JsonObject) item;
        if (!"Feature".equals(feature.get("type"))) {
            throw new Violation(where + " has type " + quote(feature.get("type")) + ", not \"Feature\"");
        }
        Object id = feature.get("id");
        if (id != null) {
            if (!(id instanceof String)) {
                throw new Violation(where + " has an \"id\" that is not a string: " + id);
            }
            try {
                UUID.fromString((String) id);
            } catch (IllegalArgumentException e) {
                throw new Violation(where + " has an \"id\" that is not a UUID: " + quote(id));
            }
        }
        Object props = feature.get("properties");
        if (!(props instanceof JsonObject)) {
            throw new Violation(where + " has no \"properties\" object");
        }
        JsonObject properties = (JsonObject) props;
        if (!"annotation".equals(properties.get("objectType"))) {
            throw new Violation(where + " has objectType " + quote(properties.get("objectType"))
                    + ", not \"annotation\"");
        }
        String className = checkClassification(properties.get("classification"), where);
        where = where + " (class " + quote(className) + ")";
        checkMeasurements(properties.get("measurements"), where);
        return checkGeometry(feature.get("geometry"), where);
    }

    static String checkClassification(Object value, String where) throws Violation {
        if (!(value instanceof JsonObject)) {
            throw new Violation(where + " has no \"classification\" object");
        }
        JsonObject classification = (JsonObject) value;
        Object name = classification.get("name");
        if (!(name instanceof String) || ((String) name).trim().isEmpty()) {
            throw new Violation(where + " has a classification without a non-empty string \"name\"");
        }
        Object color = classification.get("color");
        if (!(color instanceof JsonArray) || ((JsonArray) color).size() != 3) {
            throw new Violation(where + " (class " + quote(name) + ") has a classification \"color\" "
                    + "that is not an array of three integers: " + color);
        }
        for (Object channel : (JsonArray) color) {
            if (!isInteger(channel) || ((BigDecimal) channel).intValueExact() < 0
                    || ((BigDecimal) channel).intValueExact() > 255) {
                throw new Violation(where + " (class " + quote(name) + ") has a colour channel "
                        + channel + " that is not an integer 0-255");
            }
        }
        return (String) name;
    }

    static void checkMeasurements(Object value, String where) throws Violation {
        if (value == null) {
            return;
        }
        if (!(value instanceof JsonObject)) {
            throw new Violation(where + " has \"measurements\" that are not an object of numbers");
        }
        for (Object entry : ((JsonObject) value).entrySet()) {
            Map.Entry<?, ?> pair = (Map.Entry<?, ?>) entry;
            if (!(pair.getValue() instanceof BigDecimal)) {
                throw new Violation(where + " has a measurement " + quote(pair.getKey())
                        + " that is not a finite number: " + pair.getValue());
            }
        }
    }

    static int checkGeometry(Object value, String where) throws Violation {
        if (!(value instanceof JsonObject)) {
            throw new Violation(where + " has no geometry object");
        }
        JsonObject geometryJson = (JsonObject) value;
        Object type = geometryJson.get("type");
        if (!"Polygon".equals(type) && !"MultiPolygon".equals(type)) {
            throw new Violation(where + " has a " + quote(type)
                    + " geometry; fseg's classes are areas (Polygon or MultiPolygon)");
        }
        checkFiniteCoordinates(geometryJson.get("coordinates"), where);
        Geometry geometry;
        try {
            geometry = new GeoJsonReader().read(Jsoner.serialize(geometryJson));
        } catch (ParseException | RuntimeException e) {
            throw new Violation(where + ": JTS cannot read the geometry: " + e.getMessage());
        }
        if (geometry.isEmpty()) {
            throw new Violation(where + " has an empty geometry");
        }
        IsValidOp validity = new IsValidOp(geometry);
        if (!validity.isValid()) {
            throw new Violation(where + ": the geometry is not valid: " + describe(validity.getValidationError()));
        }
        Geometry reduced;
        try {
            reduced = GeometryPrecisionReducer.reduce(geometry, new PrecisionModel(QUPATH_PRECISION_SCALE));
        } catch (RuntimeException e) {
            throw new Violation(where + ": reducing the geometry to a 0.01 px grid failed: " + e.getMessage());
        }
        if (reduced.isEmpty()) {
            throw new Violation(where + ": the geometry vanishes on a 0.01 px grid (QuPath would drop it)");
        }
        IsValidOp reducedValidity = new IsValidOp(reduced);
        if (!reducedValidity.isValid()) {
            throw new Violation(where + ": the geometry is not valid on a 0.01 px grid: "
                    + describe(reducedValidity.getValidationError()));
        }
        double area = geometry.getArea();
        double change = Math.abs(reduced.getArea() - area) / Math.max(area, 1e-12);
        if (change > MAX_AREA_CHANGE) {
            throw new Violation(String.format(java.util.Locale.ROOT,
                    "%s: the area changes by %.2f%% on a 0.01 px grid (%.4f -> %.4f px^2)",
                    where, 100 * change, area, reduced.getArea()));
        }
        IsValidOp floatValidity = new IsValidOp(toFloat32(geometry));
        if (!floatValidity.isValid()) {
            throw new Violation(where + ": the geometry is not valid with 32-bit float coordinates "
                    + "(as QuPath stores ROIs): " + describe(floatValidity.getValidationError()));
        }
        return geometry.getNumGeometries();
    }

    /** A copy with every coordinate rounded to the nearest 32-bit float. */
    static Geometry toFloat32(Geometry geometry) {
        Geometry copy = geometry.copy();
        copy.apply(new CoordinateSequenceFilter() {
            @Override
            public void filter(CoordinateSequence sequence, int i) {
                sequence.setOrdinate(i, CoordinateSequence.X, (float) sequence.getX(i));
                sequence.setOrdinate(i, CoordinateSequence.Y, (float) sequence.getY(i));
            }

            @Override
            public boolean isDone() {
                return false;
            }

            @Override
            public boolean isGeometryChanged() {
                return true;
            }
        });
        return copy;
    }

    /** Every leaf of a coordinates array is a finite number (JSON cannot hold others). */
    static void checkFiniteCoordinates(Object value, String where) throws Violation {
        if (value instanceof JsonArray) {
            JsonArray array = (JsonArray) value;
            boolean position = !array.isEmpty() && !(array.get(0) instanceof JsonArray);
            if (position && array.size() < 2) {
                throw new Violation(where + " has a position with fewer than two numbers: " + array);
            }
            for (Object item : array) {
                checkFiniteCoordinates(item, where);
            }
        } else if (!(value instanceof BigDecimal)) {
            throw new Violation(where + " has a coordinate that is not a finite number: " + value);
        }
    }

    static boolean isInteger(Object value) {
        if (!(value instanceof BigDecimal)) {
            return false;
        }
        BigDecimal number = ((BigDecimal) value).stripTrailingZeros();
        return number.scale() <= 0 && number.abs().compareTo(BigDecimal.valueOf(1_000_000)) < 0;
    }

    static String describe(TopologyValidationError error) {
        return error.getMessage() + " at " + error.getCoordinate();
    }

    static String quote(Object value) {
        return value instanceof String ? "\"" + value + "\"" : String.valueOf(value);
    }

    static String readUtf8(Path path) throws Violation {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(path);
        } catch (IOException e) {
            throw new Violation("cannot read the file: " + e);
        }
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes))
                    .toString();
        } catch (CharacterCodingException e) {
            throw new Violation("not UTF-8 text (GeoJSON is UTF-8, and fseg_import.groovy reads it so): " + e);
        }
    }
}
