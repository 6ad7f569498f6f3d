/*
 * fseg_segment.groovy: segment the open image with fseg (F-SEG, unsupervised
 * tissue segmentation) and import the result as named, coloured annotations.
 *
 * Use: edit the settings below, then run it on one image (Run), or on every
 * image of a project (Run > Run for project). With annotations selected, only
 * their union is segmented. Progress and errors go to QuPath's log
 * (View > Show log); a problem is one ERROR line, never a stack trace.
 *
 * Written for QuPath 0.5 and 0.6 (both run scripts with Groovy 4). The script
 * keeps to syntax that Groovy 2.4 parses too, which is what the fseg project's
 * CI compiles it with. What differs between the two versions, and what the
 * script does about it:
 *  - Object metadata: 0.6 gives every object a metadata map, 0.5 only TMA
 *    cores. Imported objects are therefore tagged by name ("[fseg] <class>"),
 *    which both versions keep, show and save.
 *  - Geometry: 0.6 snaps imported geometries onto the 0.01 px grid of
 *    QuPath's geometry factory (both keep ROI coordinates as 32-bit floats);
 *    fseg's polygons are checked in CI to stay valid and keep their area so.
 *  - Nothing else this script touches differs: the image server reports its
 *    type ("OpenSlide", "Bio-Formats") and its URIs the same way in both, and
 *    QP's getCurrentImageData, getProject, getPathClass, addObjects and
 *    removeObjects keep their signatures.
 *
 * Coordinates: QuPath's OpenSlide server shows a slide cropped to OpenSlide's
 * bounds (openslide.bounds-x/-y); Bio-Formats shows the whole level 0. The
 * script asks fseg for the frame the image's server uses (--frame bounds or
 * --frame level0), so polygons land where QuPath draws the tissue.
 */

import static qupath.lib.gui.scripting.QPEx.*

import java.awt.geom.AffineTransform
import java.nio.charset.StandardCharsets
import java.nio.file.Paths

import com.google.gson.JsonElement
import javafx.application.Platform
import org.locationtech.jts.geom.Geometry
import org.locationtech.jts.geom.prep.PreparedGeometry
import org.locationtech.jts.geom.prep.PreparedGeometryFactory
import org.locationtech.jts.geom.util.PolygonExtracter
import org.locationtech.jts.operation.union.UnaryUnionOp
import org.slf4j.LoggerFactory
import qupath.lib.common.ColorTools
import qupath.lib.gui.QuPathGUI
import qupath.lib.io.GsonTools
import qupath.lib.objects.PathObject
import qupath.lib.objects.PathObjectTools
import qupath.lib.objects.PathObjects
import qupath.lib.roi.GeometryTools

// ================================ settings ================================
// The fseg client: 'fseg' when QuPath finds it on the PATH, otherwise its full
// path, e.g. '/home/me/fseg-env/bin/fseg' or 'C:\\fseg-env\\Scripts\\fseg.exe'.
// (QuPath started from a desktop icon often does not see a shell's PATH.)
FSEG_CLIENT = 'fseg'
// The fseg server as 'host:port'. '' starts a local server for every image,
// which needs the client installed with the server part (pip install "fseg[server]").
FSEG_SERVER = ''
// File holding the server's access token; '' for none (or set FSEG_TOKEN).
FSEG_TOKEN_FILE = ''
// Feature extractor; '' for the server's default.
FSEG_EXTRACTOR = ''
// Concept bank: the name of a bank the server loaded, or a .safetensors file.
// '' fits a bank on the first image and reuses it for every later image of the
// project (saved as fseg-bank.safetensors in the output folder), so that a
// class means the same tissue on every slide.
FSEG_BANK = ''
// Number of classes.
FSEG_K = 8
// 'project', 'classify' or 'cluster'.
FSEG_MODE = 'project'
// Where results go; '' is the folder 'fseg' inside the project (or in your
// home folder when no project is open). fseg_import.groovy reads from there.
FSEG_OUTPUT_DIR = ''
// Region: with annotations selected, only their union is segmented. Run for
// project selects nothing, so name a class here (e.g. 'Tissue') to segment
// inside every annotation of that class; '' segments the whole slide when
// nothing is selected. Images without such an annotation are skipped.
FSEG_ROI_CLASS = ''
// Coordinate frame: 'auto' (from the image server: OpenSlide -> bounds,
// Bio-Formats and the others -> level0), 'bounds' or 'level0'.
FSEG_FRAME = 'auto'
// Send QuPath's pixel size (Image tab) to fseg as --mpp, when the image has one.
FSEG_USE_QUPATH_PIXEL_SIZE = true
// Progress lines in the log: 'lines'; '' for a client without --progress.
FSEG_PROGRESS = 'lines'
// More client options, e.g. ['--split-regions'] or ['--tissue', 'off'].
FSEG_EXTRA_ARGS = []
// Import: a class already in the project keeps its colour, unless this is true.
FSEG_OVERRIDE_PROJECT_COLOURS = false
// Import: add fseg's classes to the project's class list.
FSEG_ADD_CLASSES_TO_PROJECT = true
// ==========================================================================

try {
    fsegSegmentCurrentImage()
} catch (FsegError error) {
    fsegLog().error(error.getMessage())
}

/** Segments the current image and imports the result. */
void fsegSegmentCurrentImage() {
    def imageData = getCurrentImageData()
    if (imageData == null) {
        throw new FsegError('no image is open: open one, or use Run > Run for project')
    }
    def server = imageData.getServer()
    File slide = fsegSlideFile(server)
    String stem = fsegStem(slide.getName())
    String frame = fsegChosenFrame(server)
    File outDir = fsegOutputDir()
    if (!outDir.isDirectory() && !outDir.mkdirs()) {
        throw new FsegError("cannot create the output folder ${outDir}")
    }

    List<String> command = [FSEG_CLIENT, 'segment', slide.getAbsolutePath(),
                            '--out', outDir.getAbsolutePath(), '--frame', frame,
                            '--k', FSEG_K.toString(), '--mode', FSEG_MODE]
    if (FSEG_SERVER) {
        command += ['--server', FSEG_SERVER]
    }
    command += fsegTokenArgs()
    if (FSEG_EXTRACTOR) {
        command += ['--extractor', FSEG_EXTRACTOR]
    }
    if (FSEG_BANK) {
        command += ['--concepts', FSEG_BANK]
    }
    def calibration = server.getPixelCalibration()
    if (FSEG_USE_QUPATH_PIXEL_SIZE && calibration.hasPixelSizeMicrons()) {
        command += ['--mpp', Double.toString(calibration.getAveragedPixelSizeMicrons())]
    }
    if (FSEG_PROGRESS) {
        command += ['--progress', FSEG_PROGRESS]
    }
    Map region = fsegWriteRegion(imageData, outDir, stem)
    if (region.skip) {
        fsegLog().warn("no annotation of class '${FSEG_ROI_CLASS}' in ${slide.getName()}: skipped " +
                '(FSEG_ROI_CLASS asks to segment only inside such annotations)')
        return
    }
    if (region.file != null) {
        command += ['--roi', region.file.getAbsolutePath()]
    }
    command += FSEG_EXTRA_ARGS.collect { it.toString() }

    if (FSEG_SERVER) {
        fsegCheckServer()
    }
    fsegLog().info("fseg: segmenting ${slide.getName()} (frame ${frame}) into ${outDir}")
    fsegRunClient(command)
    fsegImport(imageData, new File(outDir, stem + '.geojson'), frame, region.geometry)
}

/** The slide file behind the image, found through the server's URIs (its path is only an id). */
File fsegSlideFile(def server) {
    URI uri = fsegImageUri(server)
    if (!'file'.equalsIgnoreCase(uri.getScheme())) {
        throw new FsegError("this image is not a local file (${uri}); the fseg client needs a file " +
                'it can read (mount the share and re-add the image)')
    }
    File file
    try {
        file = Paths.get(uri).toFile()
    } catch (IllegalArgumentException | java.nio.file.FileSystemNotFoundException ignored) {
        throw new FsegError("cannot turn ${uri} into a file path")
    }
    if (!file.isFile()) {
        throw new FsegError("the image file ${file} does not exist (moved? File > Project... > " +
                'Check project URIs)')
    }
    String suffix = fsegSuffix(file.getName())
    if (!(suffix in FsegFormats.READABLE)) {
        throw new FsegError("${file.getName()} is not a file OpenSlide reads (${suffix ?: 'no suffix'}); " +
                'fseg segments ' + FsegFormats.READABLE.join(' ') + ' files')
    }
    String series = fsegBuilderArgument(server, '--series')
    if (series != null && series != '0') {
        throw new FsegError("this image is series ${series} of ${file.getName()}; fseg segments a " +
                "file's main image (series 0) only")
    }
    return file
}

List<String> fsegTokenArgs() {
    if (!FSEG_TOKEN_FILE) {
        return []
    }
    if (!new File(FSEG_TOKEN_FILE).isFile()) {
        throw new FsegError("the token file ${FSEG_TOKEN_FILE} (FSEG_TOKEN_FILE) does not exist")
    }
    return ['--token-file', FSEG_TOKEN_FILE]
}

/**
 * Writes the region to segment as GeoJSON in the output frame (QuPath's own
 * coordinates): the union of the selected annotations, or of the annotations
 * of class FSEG_ROI_CLASS. Returns [file: File or null, skip: boolean,
 * geometry: the region in QuPath's coordinates, or null for the whole image].
 */
Map fsegWriteRegion(def imageData, File outDir, String stem) {
    def hierarchy = imageData.getHierarchy()
    def isArea = { PathObject o -> o.isAnnotation() && o.hasROI() && o.getROI().isArea() }
    List<PathObject> chosen = hierarchy.getSelectionModel().getSelectedObjects().findAll(isArea)
    String source = "${chosen.size()} selected annotation(s)"
    if (chosen.isEmpty() && FSEG_ROI_CLASS) {
        chosen = hierarchy.getAnnotationObjects().findAll { PathObject o ->
            isArea(o) && o.getPathClass() != null && o.getPathClass().toString() == FSEG_ROI_CLASS
        }
        source = "${chosen.size()} annotation(s) of class '${FSEG_ROI_CLASS}'"
        if (chosen.isEmpty()) {
            return [file: null, skip: true, geometry: null]
        }
    }
    if (chosen.isEmpty()) {
        return [file: null, skip: false, geometry: null]
    }
    Geometry union = UnaryUnionOp.union(chosen.collect { PathObject o -> o.getROI().getGeometry() })
    List polygons = PolygonExtracter.getPolygons(union)
    if (polygons.isEmpty()) {
        throw new FsegError('the chosen annotations enclose no area to segment')
    }
    File file = new File(outDir, stem + '.roi.geojson')
    file.setText(fsegMultiPolygonJson(polygons), 'UTF-8')
    fsegLog().info("fseg: region of interest: the union of ${source}, ${polygons.size()} polygon(s)")
    return [file: file, skip: false, geometry: union]
}

/** GeoJSON MultiPolygon text of JTS polygons (locale-independent numbers). */
String fsegMultiPolygonJson(List polygons) {
    StringBuilder json = new StringBuilder('{"type":"MultiPolygon","coordinates":[')
    polygons.eachWithIndex { polygon, index ->
        json.append(index == 0 ? '[' : ',[')
        fsegAppendRing(json, polygon.getExteriorRing())
        for (int hole = 0; hole < polygon.getNumInteriorRing(); hole++) {
            json.append(',')
            fsegAppendRing(json, polygon.getInteriorRingN(hole))
        }
        json.append(']')
    }
    return json.append(']}').toString()
}

void fsegAppendRing(StringBuilder json, def ring) {
    json.append('[')
    ring.getCoordinates().eachWithIndex { point, index ->
        json.append(index == 0 ? '[' : ',[')
        json.append(Double.toString(point.x)).append(',').append(Double.toString(point.y)).append(']')
    }
    json.append(']')
}

/**
 * Fails with a clear message when no server can be reached (before any work starts).
 * With several servers, one that answers is enough: the client fails over.
 */
void fsegCheckServer() {
    List<String> addresses = FSEG_SERVER.split(',').collect { it.trim() }.findAll { it }
    String output = ''
    for (String address : addresses) {
        List<String> command = [FSEG_CLIENT, 'health', '--server', address]
        command += fsegTokenArgs() + fsegConnectionArgs()
        Process process = fsegStart(command)
        // Read to the end first (the client bounds its own health check), then its verdict.
        output = process.getInputStream().getText('UTF-8').trim()
        if (process.waitFor() == 0) {
            return
        }
    }
    throw new FsegError("cannot reach the fseg server at ${FSEG_SERVER}: ${output}. Check " +
            'FSEG_SERVER and that the server runs (fseg-server serve ...)')
}

/** The TLS options among FSEG_EXTRA_ARGS ('--tls-ca FILE' or '--tls-ca=FILE'), for the health check. */
List<String> fsegConnectionArgs() {
    List<String> flags = ['--tls-ca', '--tls-cert', '--tls-key', '--tls-server-name']
    List<String> extra = FSEG_EXTRA_ARGS.collect { it.toString() }
    List<String> found = []
    for (int i = 0; i < extra.size(); i++) {
        String flag = extra[i].split('=', 2)[0]
        if (flags.contains(flag)) {
            found << extra[i]
            if (!extra[i].contains('=') && i + 1 < extra.size()) {
                found << extra[++i]
            }
        }
    }
    return found
}

Process fsegStart(List<String> command) {
    ProcessBuilder builder = new ProcessBuilder(command.collect { it.toString() })
    builder.redirectErrorStream(true)
    builder.environment().put('PYTHONIOENCODING', 'utf-8')
    builder.environment().put('PYTHONUNBUFFERED', '1')
    try {
        Process process = builder.start()
        process.getOutputStream().close()
        return process
    } catch (IOException error) {
        throw new FsegError("cannot start the fseg client '${FSEG_CLIENT}' (${error.getMessage()}). " +
                'Install it (pip install fseg) and set FSEG_CLIENT at the top of this script to its ' +
                'full path, e.g. /home/me/fseg-env/bin/fseg or C:\\fseg-env\\Scripts\\fseg.exe')
    }
}

/** Runs the client, one log line per line it prints; fails with its own reason. */
void fsegRunClient(List<String> command) {
    fsegLog().info('fseg: running ' + command.collect { it.contains(' ') ? "\"${it}\"" : it }.join(' '))
    Process process = fsegStart(command)
    List<String> said = []
    BufferedReader reader = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))
    try {
        String line
        while ((line = reader.readLine()) != null) {
            if (line.trim()) {
                // A warning (no tissue found, an mpp overriding the image's own) must stand out.
                if (line.startsWith('fseg: warning:')) {
                    fsegLog().warn(line)
                } else {
                    fsegLog().info(line)
                }
                said << line
            }
            if (Thread.currentThread().isInterrupted()) {
                process.destroy()
                throw new FsegError('cancelled; the client was stopped (re-running resumes)')
            }
        }
    } finally {
        reader.close()
    }
    int status = process.waitFor()
    if (status == 0) {
        return
    }
    List<String> latestFirst = said.reverse()
    String reason = latestFirst.find { it.contains('] failed ') } ?:
            latestFirst.find { it.startsWith('fseg: error:') } ?: (said ? said.last() : 'no output')
    String all = said.join('\n')
    if (all.contains('unrecognized arguments') && all.contains('--progress')) {
        throw new FsegError("this fseg client has no --progress option: upgrade it, or set FSEG_PROGRESS = ''")
    }
    if (all.contains(' is unavailable') || all.contains('failed to connect')) {
        throw new FsegError("cannot reach the fseg server${FSEG_SERVER ? ' at ' + FSEG_SERVER : ''}: ${reason}")
    }
    if (all.contains('OpenSlide can read') || all.contains('not a slide')) {
        throw new FsegError("OpenSlide cannot read this image: ${reason}")
    }
    throw new FsegError("fseg failed on this image (exit status ${status}): ${reason}")
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
