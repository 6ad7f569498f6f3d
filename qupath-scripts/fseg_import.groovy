/*
 * fseg_import.groovy: import fseg's result for the open image (<stem>.geojson,
 * written by fseg_segment.groovy or by the fseg command line) as named,
 * coloured annotations.
 *
 * Use: set the folder below, then Run (one image) or Run > Run for project.
 * Objects that an earlier fseg import added (named "[fseg] <class>") are
 * replaced; your own annotations are never touched. Classes take their names
 * and colours from the file; a class the project already has keeps the
 * project's colour unless FSEG_OVERRIDE_PROJECT_COLOURS is true. All objects
 * are added in one addObjects call. Problems are one ERROR line in the log.
 *
 * Written for QuPath 0.5 and 0.6 (both run scripts with Groovy 4); the script
 * keeps to syntax that Groovy 2.4 parses too, which is what the fseg project's
 * CI compiles it with. What differs between the two versions, and what the
 * script does about it:
 *  - Object metadata: 0.6 gives every object a metadata map, 0.5 only TMA
 *    cores. Imported objects are therefore tagged by name ("[fseg] <class>"),
 *    which both versions keep, show and save. Rename an object to keep it
 *    through the next import.
 *  - Geometry: 0.6 snaps imported geometries onto the 0.01 px grid of
 *    QuPath's geometry factory (both keep ROI coordinates as 32-bit floats);
 *    fseg's polygons are checked in CI to stay valid and keep their area so.
 *  - The GeoJSON is read as UTF-8 explicitly (class names, "Area µm^2"),
 *    whatever the platform's default charset.
 *
 * Coordinates: a file written in fseg's bounds frame (QuPath's OpenSlide
 * server) is shifted into level 0 when this image is shown through
 * Bio-Formats; objects far outside the image are reported in the log.
 */

import static qupath.lib.gui.scripting.QPEx.*

import java.awt.geom.AffineTransform

import com.google.gson.JsonElement
import javafx.application.Platform
import org.locationtech.jts.geom.Geometry
import org.locationtech.jts.geom.prep.PreparedGeometry
import org.locationtech.jts.geom.prep.PreparedGeometryFactory
import org.slf4j.LoggerFactory
import qupath.lib.common.ColorTools
import qupath.lib.gui.QuPathGUI
import qupath.lib.io.GsonTools
import qupath.lib.objects.PathObject
import qupath.lib.objects.PathObjectTools
import qupath.lib.objects.PathObjects
import qupath.lib.roi.GeometryTools

// ================================ settings ================================
// The folder holding <stem>.geojson; '' is the folder 'fseg' inside the
// project (or in your home folder when no project is open), where
// fseg_segment.groovy writes.
FSEG_OUTPUT_DIR = ''
// The frame QuPath shows this image in: 'auto' (from the image server:
// OpenSlide -> bounds, Bio-Formats and the others -> level0), 'bounds' or 'level0'.
FSEG_FRAME = 'auto'
// A class already in the project keeps its colour, unless this is true.
FSEG_OVERRIDE_PROJECT_COLOURS = false
// Add fseg's classes to the project's class list.
FSEG_ADD_CLASSES_TO_PROJECT = true
// ==========================================================================

try {
    def imageData = getCurrentImageData()
    if (imageData == null) {
        throw new FsegError('no image is open: open one, or use Run > Run for project')
    }
    def server = imageData.getServer()
    String frame = fsegChosenFrame(server)
    String stem = fsegStem(fsegImageFileName(server))
    fsegImport(imageData, new File(fsegOutputDir(), stem + '.geojson'), frame, null)
} catch (FsegError error) {
    fsegLog().error(error.getMessage())
}

// ===== fseg import: shared by fseg_import.groovy and fseg_segment.groovy; keep both copies identical =====

/** A problem the user can fix: logged as one ERROR line, without a stack trace. */
class FsegError extends RuntimeException {
    FsegError(String message) {
        super(message)
    }
}

/** What the fseg client reads, by file suffix (OpenSlide's formats, plus plain images). */
class FsegFormats {
    static final List<String> READABLE = ['.svs', '.tif', '.tiff', '.ndpi', '.vms', '.vmu', '.scn',
                                          '.mrxs', '.svslide', '.bif', '.dcm', '.czi', '.png', '.jpg', '.jpeg']
    /** Imported objects are named TAG + class: how a later import finds and replaces them. */
    static final String TAG = '[fseg] '
}

def fsegLog() {
    return LoggerFactory.getLogger('fseg')
}

/** The one URI of the image's file (the server's path is an id, not a file name). */
URI fsegImageUri(def server) {
    Collection uris = server.getURIs()
    if (uris == null || uris.isEmpty()) {
        throw new FsegError('this image has no file behind it (a generated or combined image?)')
    }
    if (uris.size() > 1) {
        throw new FsegError("this image combines ${uris.size()} files; fseg works on one slide file")
    }
    return uris.iterator().next()
}

/** The image file's name, from its URI (which need not be a local file). */
String fsegImageFileName(def server) {
    URI uri = fsegImageUri(server)
    String path = uri.getPath() ?: uri.getSchemeSpecificPart()
    return path.substring(path.lastIndexOf('/') + 1)
}

/** The file name without its last suffix, as the fseg client names its outputs. */
String fsegStem(String name) {
    int dot = name.lastIndexOf('.')
    return dot > 0 ? name.substring(0, dot) : name
}

String fsegSuffix(String name) {
    int dot = name.lastIndexOf('.')
    return dot > 0 ? name.substring(dot).toLowerCase(Locale.ROOT) : ''
}

File fsegOutputDir() {
    if (FSEG_OUTPUT_DIR) {
        return new File(FSEG_OUTPUT_DIR.toString())
    }
    if (getProject() != null) {
        return new File(buildFilePath(PROJECT_BASE_DIR, 'fseg'))
    }
    return new File(System.getProperty('user.home'), 'fseg')
}

/** A builder argument's value (e.g. '--series'), or null. */
String fsegBuilderArgument(def server, String name) {
    def builder = server.getBuilder()
    if (builder == null || !builder.metaClass.respondsTo(builder, 'getArgs')) {
        return null
    }
    List<String> args = (builder.getArgs() ?: []) as List<String>
    int at = args.indexOf(name)
    if (at < 0) {
        return null
    }
    return at + 1 < args.size() ? args[at + 1] : ''
}

/** The frame to ask fseg for: the setting, or the one the image server shows. */
String fsegChosenFrame(def server) {
    if (FSEG_FRAME == 'auto') {
        List<String> chosen = fsegServerFrame(server)
        fsegLog().info("fseg: coordinate frame ${chosen[0]} (${chosen[1]})")
        return chosen[0]
    }
    if (!(FSEG_FRAME in ['bounds', 'level0'])) {
        throw new FsegError("FSEG_FRAME must be 'auto', 'bounds' or 'level0', not '${FSEG_FRAME}'")
    }
    return FSEG_FRAME
}

/**
 * The frame QuPath shows the image in, and why: [frame, reason]. QuPath's
 * OpenSlide server crops to openslide.bounds-* unless the image was added with
 * --no-crop; Bio-Formats and the other servers show level 0 as it is.
 */
List<String> fsegServerFrame(def server) {
    def base = server
    List<String> wrappers = []
    while (base.metaClass.respondsTo(base, 'getWrappedServer')) {
        wrappers << base.getClass().getSimpleName()
        base = base.getWrappedServer()
    }
    if (wrappers) {
        fsegLog().warn("fseg: the image is shown through ${wrappers.join(', ')}; if that rotates, crops or " +
                "transforms it, fseg's polygons will not line up")
    }
    String type = base.getServerType() ?: base.getClass().getSimpleName()
    if (type.toLowerCase(Locale.ROOT).contains('openslide')) {
        if (fsegBuilderArgument(base, '--no-crop') != null) {
            return ['level0', "QuPath's OpenSlide server, added with --no-crop"]
        }
        return ['bounds', "QuPath's OpenSlide server shows the slide cropped to its bounds"]
    }
    return ['level0', "the ${type} server shows level 0 uncropped"]
}

/**
 * Imports <stem>.geojson into the image: replaces the objects an earlier fseg
 * import added (named "[fseg] ..."), all of them, or with a region (the
 * geometry that was segmented) only their part inside it, so results for
 * other regions stay (the user's own objects are never touched),
 * gives classes the file's names and colours (a class already in the project
 * keeps the project's colour unless FSEG_OVERRIDE_PROJECT_COLOURS), and adds
 * every object in one addObjects call. expectedFrame is the frame QuPath shows
 * the image in; a file in the bounds frame is shifted into level 0 if needed.
 */
int fsegImport(def imageData, File geojson, String expectedFrame, Geometry region) {
    if (!geojson.isFile()) {
        throw new FsegError("no fseg result for this image: ${geojson} does not exist (run " +
                'fseg_segment.groovy first, or set FSEG_OUTPUT_DIR to the folder holding it)')
    }
    def gson = GsonTools.getInstance()
    def root
    try {
        root = gson.fromJson(geojson.getText('UTF-8'), JsonElement.class)
    } catch (RuntimeException error) {
        throw new FsegError("${geojson} is not valid GeoJSON (${error.getMessage()})")
    }
    List features = []
    if (root != null && root.isJsonObject() && root.has('features')) {
        features = root.getAsJsonArray('features').collect { it }
    } else if (root != null && root.isJsonArray()) {
        features = root.collect { it }
    } else {
        throw new FsegError("${geojson} is not a GeoJSON FeatureCollection")
    }

    double dx = 0
    double dy = 0
    def meta = root.isJsonObject() && root.has('fseg') ? root.getAsJsonObject('fseg') : null
    String fileFrame = meta != null && meta.has('frame') ? meta.get('frame').getAsString() : expectedFrame
    if (fileFrame == 'bounds' && expectedFrame == 'level0' && meta.has('frame_offset')) {
        dx = meta.getAsJsonArray('frame_offset').get(0).getAsDouble()
        dy = meta.getAsJsonArray('frame_offset').get(1).getAsDouble()
        if (dx != 0 || dy != 0) {
            fsegLog().info("fseg: the file is in the bounds frame; shifting by (${dx}, ${dy}) into level 0")
        }
    } else if (fileFrame != expectedFrame) {
        fsegLog().warn("fseg: the file is in the ${fileFrame} frame but QuPath shows this image in the " +
                "${expectedFrame} frame: objects may be offset; re-run fseg_segment.groovy")
    }

    Map<String, List<Integer>> colours = new LinkedHashMap<>()
    List<PathObject> created = []
    features.eachWithIndex { feature, index ->
        def classification = feature.getAsJsonObject('properties')?.getAsJsonObject('classification')
        if (classification == null || !classification.has('name')) {
            throw new FsegError("${geojson}: feature ${index} has no classification name")
        }
        String name = classification.get('name').getAsString()
        if (classification.has('color')) {
            colours.put(name, classification.getAsJsonArray('color').collect { it.getAsInt() })
        }
        PathObject object = gson.fromJson(feature, PathObject.class)
        if (dx != 0 || dy != 0) {
            object = PathObjectTools.transformObject(object, AffineTransform.getTranslateInstance(dx, dy), true)
        }
        object.setPathClass(getPathClass(name))
        object.setName(FsegFormats.TAG + name)
        created << object
    }
    fsegApplyClasses(colours)
    fsegWarnOutside(imageData.getServer(), created, fileFrame)

    // A whole-image result replaces every earlier [fseg] object; a region's result
    // replaces only what lay inside the region, cut out of the earlier objects, so
    // segmenting region B after region A keeps A's results.
    List<PathObject> earlier = imageData.getHierarchy().getAnnotationObjects().findAll { PathObject o ->
        o.getName() != null && o.getName().startsWith(FsegFormats.TAG)
    }
    List<PathObject> remainders = []
    if (region != null) {
        PreparedGeometry inside = PreparedGeometryFactory.prepare(region)
        earlier = earlier.findAll { PathObject o -> inside.intersects(o.getROI().getGeometry()) }
        for (PathObject o : earlier) {
            Geometry rest = o.getROI().getGeometry().difference(region)
            if (!rest.isEmpty() && rest.getArea() > 0) {
                PathObject kept = PathObjects.createAnnotationObject(
                        GeometryTools.geometryToROI(rest, o.getROI().getImagePlane()), o.getPathClass())
                kept.setName(o.getName())
                remainders << kept
            }
        }
    }
    if (!earlier.isEmpty()) {
        removeObjects(earlier, true) // keeps the user's objects nested inside them
    }
    addObjects(created + remainders) // one batch: one hierarchy event
    fsegLog().info("fseg: imported ${created.size()} objects in ${colours.size()} classes from " +
            "${geojson.getName()}" + (earlier ? "; replaced ${earlier.size()} from an earlier import" : ''))
    return created.size()
}

/** Colours for the file's classes, and the classes added to the project's list. */
void fsegApplyClasses(Map<String, List<Integer>> colours) {
    def project = getProject()
    def gui = QuPathGUI.getInstance()
    Set<String> known = new HashSet<>()
    if (project != null) {
        known.addAll(project.getPathClasses().collect { it.toString() })
    }
    if (gui != null) {
        known.addAll(gui.getAvailablePathClasses().collect { it.toString() })
    }
    List added = []
    colours.each { String name, List<Integer> rgb ->
        def pathClass = getPathClass(name)
        boolean inProject = name in known
        if (rgb != null && rgb.size() == 3 && (!inProject || FSEG_OVERRIDE_PROJECT_COLOURS)) {
            pathClass.setColor(ColorTools.packRGB(rgb[0], rgb[1], rgb[2]))
        }
        if (!inProject) {
            added << pathClass
        }
    }
    if (!FSEG_ADD_CLASSES_TO_PROJECT || added.isEmpty()) {
        return
    }
    if (gui != null) {
        Platform.runLater {
            def available = gui.getAvailablePathClasses()
            added.each { if (!available.contains(it)) available.add(it) }
            if (gui.getProject() != null) {
                gui.getProject().setPathClasses(available)
            }
        }
    } else if (project != null) {
        List all = new ArrayList(project.getPathClasses())
        added.each { if (!all.contains(it)) all.add(it) }
        project.setPathClasses(all)
    }
}

/** Warns when objects lie well outside the image: the sign of a coordinate frame mismatch. */
void fsegWarnOutside(def server, List<PathObject> objects, String fileFrame) {
    double width = server.getWidth()
    double height = server.getHeight()
    double slack = 0.02 * Math.max(width, height)
    PathObject outside = objects.find { PathObject o ->
        def roi = o.getROI()
        roi.getBoundsX() < -slack || roi.getBoundsY() < -slack ||
                roi.getBoundsX() + roi.getBoundsWidth() > width + slack ||
                roi.getBoundsY() + roi.getBoundsHeight() > height + slack
    }
    if (outside != null) {
        fsegLog().warn("fseg: '${outside.getName()}' reaches outside the image (${(int) width} x " +
                "${(int) height} px); the file's ${fileFrame} frame may not be the one QuPath shows")
    }
}
// ===== end of the shared import code =====
