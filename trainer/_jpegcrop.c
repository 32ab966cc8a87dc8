/* trainer._jpegcrop: decode only the part of a JPEG that a training crop needs.
 *
 * A random-resized crop uses on average about half of an image, but a whole-image decoder
 * (simplejpeg, Pillow, TurboJPEG 2) decodes all of it. libjpeg-turbo's own libjpeg API can do
 * less: jpeg_crop_scanline() limits the inverse DCT, upsampling and colour conversion to the
 * crop's columns, jpeg_skip_scanlines() skips that work for the rows above the crop, and
 * decoding stops after the crop's last row. No maintained Python binding exposes these calls
 * (TurboJPEG 3's tj3SetCroppingRegion would, but distributions ship libjpeg-turbo 2.1), hence
 * this small module. trainer/decode.py falls back to simplejpeg when it is not built.
 *
 * The pixels are exactly simplejpeg's decode_jpeg(..., fastdct=True, fastupsample=True) of the
 * same scale, cut to the same box (tests/bench/test_decode.py checks that over many boxes).
 *
 * decode_crop(data, out, denom, x, y, width, height, mirror=False) -> None
 *   data: the JPEG bytes; out: a writable buffer of width * height * 3 bytes (RGB, row-major);
 *   denom: 1, 2, 4 or 8 (the image is decoded at 1/denom scale); x, y, width, height: the box in
 *   the scaled image's pixels; mirror: write each row right to left (a horizontal flip, for the
 *   cost of the copy the rows get anyway, where torch's flip of the resized crop measured ~8% of
 *   a worker's time per image). Raises ValueError with libjpeg's message for anything it cannot
 *   decode, including a warning (corrupt or truncated data), as simplejpeg's strict mode does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

/* Built only against the jpeg-6b ABI (Debian's libjpeg62-turbo, where the tests run it). Against
 * the jpeg-8 ABI (Ubuntu's libjpeg-turbo8: the NGC images, the device machine's image) a loader
 * segfaulted in this decoder on an H200 machine on 2026-12-04 (bench/results/h200-2026-12-04/),
 * cause not yet found; there the build stops here, setup.py's optional extension is skipped, and
 * trainer/decode.py decodes whole images with simplejpeg, which trained correctly on that machine.
 * -DTRAINER_JPEGCROP_JPEG8 (e.g. CFLAGS=-DTRAINER_JPEGCROP_JPEG8 pip install .) builds it anyway. */
#if JPEG_LIB_VERSION >= 70 && !defined(TRAINER_JPEGCROP_JPEG8)
#error "trainer._jpegcrop is not built against the jpeg-8 ABI (a segfault there, not yet understood)"
#endif

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} ErrorManager;

static void on_error(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0)          /* a warning: corrupt data that libjpeg would paper over */
        on_error(cinfo);    /* (trace messages, level >= 0, are ignored) */
}

/* dst = the `width` RGB pixels at src, right to left (dst and src do not overlap). */
static void mirror_copy(unsigned char *dst, const unsigned char *src, int width) {
    const unsigned char *s = src + (size_t)(width - 1) * 3;
    for (int i = 0; i < width; i++, dst += 3, s -= 3) {
        dst[0] = s[0];
        dst[1] = s[1];
        dst[2] = s[2];
    }
}

/* The `width` RGB pixels at row, reversed in place. */
static void mirror_in_place(unsigned char *row, int width) {
    unsigned char *a = row, *b = row + (size_t)(width - 1) * 3, t;
    for (; a < b; a += 3, b -= 3) {
        t = a[0], a[0] = b[0], b[0] = t;
        t = a[1], a[1] = b[1], b[1] = t;
        t = a[2], a[2] = b[2], b[2] = t;
    }
}

/* All the libjpeg work, without the GIL. Returns 0, or -1 with `message` set. */
static int crop(const unsigned char *data, size_t size, int denom, int x, int y, int width, int height,
                int mirror, unsigned char *out, char *message) {
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    JSAMPARRAY volatile rows = NULL;
    unsigned char *volatile block = NULL;

    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.message[0] = '\0';
    if (setjmp(err.jump)) {
        strncpy(message, err.message[0] ? err.message : "libjpeg error", JMSG_LENGTH_MAX - 1);
        message[JMSG_LENGTH_MAX - 1] = '\0';
        free(rows);
        free(block);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)denom;
    cinfo.dct_method = JDCT_IFAST;          /* TJFLAG_FASTDCT, as trainer/decode.py asks simplejpeg */
    cinfo.do_fancy_upsampling = FALSE;      /* TJFLAG_FASTUPSAMPLE */
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != 3 || (JDIMENSION)x + (JDIMENSION)width > cinfo.output_width ||
        (JDIMENSION)y + (JDIMENSION)height > cinfo.output_height) {
        snprintf(message, JMSG_LENGTH_MAX, "crop %dx%d at (%d, %d) is outside the %ux%u image at 1/%d scale",
                 width, height, x, y, cinfo.output_width, cinfo.output_height, denom);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    /* The decoder's window starts at an iMCU boundary at or left of x and may be wider. */
    JDIMENSION left = (JDIMENSION)x, span = (JDIMENSION)width;
    if (left > 0 || span < cinfo.output_width)
        jpeg_crop_scanline(&cinfo, &left, &span);
    size_t shift = ((size_t)x - left) * 3, bytes = (size_t)width * 3, stride = (size_t)span * 3;
    /* Rows are asked for many at a time (one at a time costs the merged upsampler a copy per row),
       straight into `out` when the window is the box, else into a scratch block cut down after. */
    int direct = shift == 0 && span == (JDIMENSION)width;
    rows = malloc(sizeof(JSAMPROW) * (size_t)height);
    if (!direct)
        block = malloc(stride * (size_t)height);
    if (rows == NULL || (!direct && block == NULL)) {
        strcpy(message, "out of memory");
        free(rows);
        free(block);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    for (int r = 0; r < height; r++)
        rows[r] = (direct ? out : block) + (size_t)r * stride;
    if (y > 0)
        jpeg_skip_scanlines(&cinfo, (JDIMENSION)y);
    for (JDIMENSION done = 0; done < (JDIMENSION)height;) {
        JDIMENSION got = jpeg_read_scanlines(&cinfo, rows + done, (JDIMENSION)height - done);
        if (got == 0) {
            snprintf(message, JMSG_LENGTH_MAX, "libjpeg returned no scanline %d", y + (int)done);
            free(rows);
            free(block);
            jpeg_destroy_decompress(&cinfo);
            return -1;
        }
        done += got;
    }
    for (int r = 0; (mirror || !direct) && r < height; r++) {   /* cut the block down, mirror */
        unsigned char *row = out + (size_t)r * bytes;
        if (direct)
            mirror_in_place(row, width);
        else if (mirror)
            mirror_copy(row, block + (size_t)r * stride + shift, width);
        else
            memcpy(row, block + (size_t)r * stride + shift, bytes);
    }
    free(rows);
    free(block);
    jpeg_destroy_decompress(&cinfo);        /* the rows below the crop are never decoded */
    return 0;
}

static PyObject *decode_crop(PyObject *self, PyObject *args) {
    Py_buffer data, out;
    int denom, x, y, width, height, mirror = 0, status;
    char message[JMSG_LENGTH_MAX];
    (void)self;

    if (!PyArg_ParseTuple(args, "y*w*iiiii|p", &data, &out, &denom, &x, &y, &width, &height, &mirror))
        return NULL;
    if (!(denom == 1 || denom == 2 || denom == 4 || denom == 8) || x < 0 || y < 0 || width <= 0 ||
        height <= 0 || out.len < (Py_ssize_t)width * height * 3) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "decode_crop: denom must be 1, 2, 4 or 8, the box non-empty, "
                                          "and out at least width * height * 3 bytes");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = crop((const unsigned char *)data.buf, (size_t)data.len, denom, x, y, width, height, mirror,
                  (unsigned char *)out.buf, message);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    if (status != 0) {
        PyErr_SetString(PyExc_ValueError, message);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode_crop", decode_crop, METH_VARARGS,
     "decode_crop(data, out, denom, x, y, width, height, mirror=False): decode only this box of the JPEG, "
     "at 1/denom scale, into out (width * height * 3 bytes, RGB; each row right to left if mirror). "
     "Raises ValueError when libjpeg cannot."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpegcrop",
                                    "Partial JPEG decoding with libjpeg-turbo (see trainer/decode.py).", -1, methods};

PyMODINIT_FUNC PyInit__jpegcrop(void) { return PyModule_Create(&module); }
